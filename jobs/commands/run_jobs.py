"""`stripe-reconcile run JOB`: one command per job of the registry, its flags built from the
job's options model (reconcile.job_options), so the CLI and `[schedule]` take the same
options, checked by the same model.

Each model field becomes a flag: a bool one `--name`, a bool-or-None one an on/off pair
(`--email/--no-email`, or the pair the field names, `--incremental/--full`), an int a
range, a Literal a choice; its description is the help. Every `run` command also takes
`--config`, `--out` and `--json`.

Nothing heavy is imported here: the job, the runner and pandas come in when a command runs.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

import click

from jobs.commands.support import config_option, load, out_option
from jobs.registry import CATALOGUE, JobEntry

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from jobs.runner import RunOutcome
    from reconcile.job_options import JobOptions

__all__ = [
    "attach_jobs",
    "exit_reason",
    "job_command",
    "json_option",
    "model_options",
    "run_result_json",
]

_SHARED_LAST = ("fail_on", "email", "resume")


def json_option(help_text: str) -> click.Option:
    return click.Option(["--json", "as_json"], is_flag=True, help=help_text)


def _flag_of(name: str, info: FieldInfo) -> str:
    extra = info.json_schema_extra
    declared = extra.get("flag") if isinstance(extra, dict) else None
    return str(declared) if declared else "--" + name.replace("_", "-")


def _bound(info: FieldInfo, which: str) -> int | None:
    for constraint in info.metadata:
        value = getattr(constraint, which, None)
        if isinstance(value, int):
            return value
    return None


def field_option(name: str, info: FieldInfo) -> click.Option:
    """The click option of one options-model field (TypeError for a type it cannot take)."""
    flag = _flag_of(name, info)
    annotation = info.annotation
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        optional = len(members) < len(get_args(annotation))
        if len(members) != 1:
            raise TypeError(f"option {name}: {annotation} has no flag form")
        annotation = members[0]
    help_text = info.description
    if annotation is bool:
        if optional:
            pair = flag if "/" in flag else f"{flag}/--no-{flag.removeprefix('--')}"
            return click.Option([pair, name], default=None, help=help_text)
        return click.Option([flag, name], is_flag=True, default=info.default, help=help_text)
    if annotation is int:
        return click.Option(
            [flag, name],
            type=click.IntRange(min=_bound(info, "ge"), max=_bound(info, "le")),
            default=info.default,
            show_default=info.default is not None,
            help=help_text,
        )
    if get_origin(annotation) is Literal:
        choices = [str(choice) for choice in get_args(annotation)]
        return click.Option(
            [flag, name], type=click.Choice(choices), default=info.default, help=help_text
        )
    raise TypeError(f"option {name}: {annotation} has no flag form")


def model_options(model: type[JobOptions]) -> list[click.Option]:
    """The flags of `model`: the job's own first, then --fail-on, --email, --resume."""
    fields = model.model_fields
    own = [name for name in fields if name not in _SHARED_LAST]
    shared = [name for name in _SHARED_LAST if name in fields]
    return [field_option(name, fields[name]) for name in [*own, *shared]]


def job_command(entry: JobEntry) -> click.Command:
    """`run NAME` for the catalogue entry, with the flags of its options model."""
    from reconcile.job_options import OPTION_MODELS

    model = OPTION_MODELS[entry.name]

    @click.pass_context
    def callback(
        ctx: click.Context,
        /,
        config_path: Path | None,
        out_dir: Path | None,
        as_json: bool,
        **values: Any,
    ) -> None:
        _run(ctx, entry, config_path, out_dir, as_json, values)

    own = model_options(model)
    shared_at = len([o for o in own if o.name not in _SHARED_LAST])
    params: list[click.Parameter] = [
        *own[:shared_at],
        *_decorated_params(config_option),
        *_decorated_params(out_option),
        *own[shared_at:],
        json_option(
            "Print one JSON object at the end (run id, folder, status, exit code, counts by "
            "kind, changes) and nothing else on stdout; logs stay on stderr."
        ),
    ]
    return click.Command(entry.name, callback=callback, params=params, help=entry.help)


def _decorated_params(decorator: Any) -> list[click.Parameter]:
    """The options a support.py decorator adds, as parameter objects."""

    def nothing() -> None:
        pass

    params: list[click.Parameter] = getattr(decorator(nothing), "__click_params__", [])
    return params


def attach_jobs(group: click.Group) -> None:
    """Attach `run NAME` for every job of the catalogue, each built on first use."""
    from jobs.commands.support import ReconcileGroup

    assert isinstance(group, ReconcileGroup)
    for entry in CATALOGUE:
        group.add_lazy_command(entry.name, _builder(entry), entry.help)


def _builder(entry: JobEntry) -> Callable[[], click.Command]:
    return lambda: job_command(entry)


def _run(
    ctx: click.Context,
    entry: JobEntry,
    config_path: Path | None,
    out_dir: Path | None,
    as_json: bool,
    values: Mapping[str, Any],
) -> None:
    from reconcile.errors import ReconcileError
    from reconcile.job_options import parse_job_options

    captured: list[RunOutcome] = []
    try:
        options = parse_job_options(entry.name, values, where=f"run {entry.name}")
        settings = load(ctx, config_path)
        from jobs.options import run_job
        from jobs.registry import load_job

        outcome = run_job(
            load_job(entry.name),
            settings,
            options,
            out_dir=out_dir,
            # First of the after-run steps: a run whose email then fails is still known.
            after_run=[lambda outcome, _settings: captured.append(outcome)],
        )
    except (ReconcileError, KeyboardInterrupt) as exc:
        if as_json:
            from reconcile.logs import redact_text

            code = exc.exit_code if isinstance(exc, ReconcileError) else 130
            # As the error line on stderr shows it: no key, no address.
            message = redact_text(exc.message) if isinstance(exc, ReconcileError) else "interrupted"
            known = captured[0] if captured else None
            click.echo(_dumps(run_result_json(entry.name, known, code, message, [])))
        raise
    warnings = _warnings(entry, outcome, options)
    reason = exit_reason(outcome, options)
    for line in [*warnings, *([reason] if reason else [])]:
        click.echo(f"stripe-reconcile: {line}", err=True)
    if as_json:
        result = run_result_json(entry.name, outcome, outcome.exit_code, reason, warnings)
        click.echo(_dumps(result))
    else:
        from jobs.summary import format_summary

        click.echo(format_summary(outcome.summary))
        for line in _detail_lines(entry, outcome.summary):
            click.echo(line)
        click.echo(str(outcome.run_dir))
    ctx.exit(outcome.exit_code)


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, default=str)


def _detail_lines(entry: JobEntry, summary: Mapping[str, Any]) -> list[str]:
    if entry.writes:
        from jobs.commands.maintenance import format_plan_line

        return [format_plan_line(summary)]
    if entry.name == "card-expiry":
        from jobs.commands.card_expiry import reminder_lines

        return reminder_lines(summary)
    return []


def _warnings(entry: JobEntry, outcome: RunOutcome, options: JobOptions) -> list[str]:
    if not entry.writes:
        return []
    from jobs.commands.maintenance import max_changes_warning

    warning = max_changes_warning(outcome.summary, getattr(options, "max_changes", None))
    return [] if warning is None else [warning]


def exit_reason(outcome: RunOutcome, options: JobOptions) -> str | None:
    """Why a completed run exits non-zero, in one line; None when it exits 0."""
    from reconcile.errors import EXIT_ACTIONS_FAILED, EXIT_FINDINGS

    if outcome.exit_code == EXIT_ACTIONS_FAILED:
        failed = outcome.result.failed_actions
        return f"{failed} action(s) failed: see audit.csv in the run folder (exit 6)"
    if outcome.exit_code == EXIT_FINDINGS and options.fail_on is not None:
        from jobs.runner import severity_at_least

        threshold = options.fail_on
        matched = sum(
            1 for severity in outcome.findings["severity"] if severity_at_least(severity, threshold)
        )
        noun = "finding" if matched == 1 else "findings"
        return f"--fail-on {threshold}: {matched} {noun} at {threshold} or above (exit 1)"
    return None


def run_result_json(
    job: str,
    outcome: RunOutcome | None,
    exit_code: int,
    message: str | None,
    warnings: list[str],
) -> dict[str, Any]:
    """The one object `run JOB --json` prints; without an outcome (the run failed before
    its report), the run's fields are null."""
    if outcome is None:
        status = "interrupted" if exit_code == 130 else "failed"
        return {
            "job": job,
            "run_id": None,
            "folder": None,
            "status": status,
            "exit_code": exit_code,
            "mode": None,
            "counts_by_kind": None,
            "changes": None,
            "message": message,
            "warnings": warnings,
        }
    summary = _summary_json(Path(outcome.run_dir)) or outcome.summary
    return {
        "job": job,
        "run_id": outcome.run_id,
        "folder": str(outcome.run_dir),
        "status": summary.get("status", outcome.summary.get("status")),
        "exit_code": exit_code,
        "mode": summary.get("mode"),
        "counts_by_kind": summary.get("counts_by_kind", {}),
        "changes": summary.get("changes"),
        "message": message,
        "warnings": warnings,
    }


def _summary_json(run_dir: Path) -> dict[str, Any] | None:
    # summary.json is the run's record as written (with `changes`, which the in-memory
    # summary lacks); an unreadable one falls back to that.
    try:
        loaded = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None
