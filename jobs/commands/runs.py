"""`stripe-reconcile runs [show ID | diff [A] [B]]`, the `--resume` flag of every `run JOB`
command, and `--incremental/--full` of the read-only ones (reconcile, card-expiry).

`--json` gives scripts one JSON object on stdout and nothing else; the text forms are
for people. Findings are read back from the runs' own report folders (the state
database keeps counts, not rows).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from jobs.base import RESUME_REQUESTED
from jobs.commands.support import ReconcileGroup, config_option, load
from reconcile.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from reconcile.state.history import RunStats
    from reconcile.state.store import RunRecord, StateStore

__all__ = ["add_resume_options", "incremental_option", "runs"]

F = TypeVar("F", bound=Callable[..., Any])

_RESUME_HELP = (
    "Continue the job's last failed or interrupted run: its snapshot, its stored pages; "
    "only the rest is fetched (a fresh run when there is none)."
)


def incremental_option(func: F) -> F:
    """`--incremental/--full` of the read-only jobs; neither: `[incremental] enabled`."""
    return click.option(
        "--incremental/--full",
        "incremental",
        default=None,
        help=(
            "--incremental: read Stripe's events since the last run into the customer mirror "
            "instead of listing every customer (a full listing when the mirror cannot "
            "stand: missing, 29 days old, [incremental] full_every_days due, other mode, "
            "account or version); --full: list every customer "
            "[default: [incremental] enabled]."
        ),
    )(func)


def add_resume_options(group: click.Group) -> None:
    """Give every command of `group` (the `run` group) a `--resume` flag.

    The flag is carried in a context variable the job's listing reads, so commands
    defined in other modules get it without changing how they call the runner.
    """
    for command in group.commands.values():
        if command.callback is None or any(p.name == "resume" for p in command.params):
            continue
        command.params.append(click.Option(["--resume"], is_flag=True, help=_RESUME_HELP))
        command.callback = _resuming(command.callback)


def _resuming(callback: Any) -> Any:
    @functools.wraps(callback)
    def wrapper(*args: Any, resume: bool = False, **kwargs: Any) -> Any:
        token = RESUME_REQUESTED.set(resume)
        try:
            return callback(*args, **kwargs)
        finally:
            RESUME_REQUESTED.reset(token)

    return wrapper


_JSON_OPTION = click.option(
    "--json", "as_json", is_flag=True, help="One JSON object on stdout, for scripts."
)
# The columns of the findings tables printed for people, in order; empty ones are left
# out. No email: the ids are what a person pastes into the Stripe dashboard.
_TEXT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("kind", "KIND"),
    ("severity", "SEVERITY"),
    ("customer_id", "CUSTOMER ID"),
    ("user_id", "USER ID"),
    ("field", "FIELD"),
    ("stripe_value", "STRIPE"),
    ("local_value", "LOCAL"),
    ("related_ids", "RELATED IDS"),
    ("detail", "DETAIL"),
)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _config_path(ctx: click.Context, config_path: Path | None) -> Path | None:
    parent_obj = (ctx.parent.obj if ctx.parent is not None else None) or {}
    path: Path | None = config_path or parent_obj.get("runs_config_path")
    return path


def _check_job(job: str | None) -> None:
    from jobs.registry import JOBS

    if job is not None and job not in JOBS:
        # A misspelt job would list nothing, as if it had never run.
        raise ConfigError(
            f"--job {job}: no job is called {job!r}; the jobs are {', '.join(sorted(JOBS))}"
        )


def _run_json(record: RunRecord, stats: RunStats | None) -> dict[str, Any]:
    from reconcile.state.store import RunStatus

    duration = stats.duration_seconds if stats is not None else None
    if duration is None and record.finished_at is not None:
        duration = round((record.finished_at - record.started_at).total_seconds(), 3)
    running = record.status is RunStatus.RUNNING
    return {
        "run_id": record.run_id,
        "job": record.job,
        "status": record.status.value,
        "mode": record.mode,
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "duration_seconds": duration,
        "findings": None if running else sum(record.counts.values()),
        "counts_by_kind": record.counts,
        "requests": sum(record.requests.values()),
        "rate_limited": None if stats is None else stats.rate_limited,
        "retries": None if stats is None else stats.retries,
        "errors": None if stats is None else stats.errors,
        "report_dir": record.report_dir,
        "error": record.error,
    }


def _summary_changes(record: RunRecord) -> Any:
    """`changes` from the run's summary.json; None where there is none to read."""
    if not record.report_dir:
        return None
    try:
        summary = json.loads((Path(record.report_dir) / "summary.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return summary.get("changes") if isinstance(summary, dict) else None


def _require_run(state: StateStore, run_id: str) -> RunRecord:
    record = state.get_run(run_id)
    if record is None:
        raise ConfigError(
            f"run {run_id} is not recorded in the state database: "
            "`stripe-reconcile runs` lists the run ids"
        )
    return record


def _findings_of(record: RunRecord) -> pd.DataFrame:
    from reports.changes import FindingsUnavailable, read_run_findings

    try:
        return read_run_findings(record)
    except FindingsUnavailable as exc:
        raise ConfigError(str(exc)) from exc


def _rows(findings: pd.DataFrame) -> list[dict[str, str]]:
    return [{str(k): str(v) for k, v in row.items()} for row in findings.to_dict("records")]


def _findings_text(rows: Sequence[Mapping[str, str]], skip: Sequence[str] = ()) -> list[str]:
    """Rows as aligned columns, the last one (the detail) not padded."""
    columns = [
        (column, heading)
        for column, heading in _TEXT_COLUMNS
        if column not in skip and any(row.get(column) for row in rows)
    ]
    table = [[heading for _, heading in columns]]
    table += [[str(row.get(column, "")) for column, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]


@click.group(cls=ReconcileGroup, invoke_without_command=True)
@config_option
@click.option("--job", default=None, help="Only runs of this job.")
@click.option("--limit", default=20, show_default=True, help="How many runs, newest first.")
@_JSON_OPTION
@click.pass_context
def runs(
    ctx: click.Context, config_path: Path | None, job: str | None, limit: int, as_json: bool
) -> None:
    """List recent runs: status, start, duration, findings, requests, 429s; reads in 30 days."""
    ctx.ensure_object(dict)
    ctx.obj["runs_config_path"] = config_path
    ctx.obj["runs_job"] = job
    if ctx.invoked_subcommand is not None:
        return
    from reconcile.state.history import format_runs, load_stats
    from reconcile.state.read_budget import BUDGET_WINDOW, format_reads_line, reads_by_job
    from reconcile.state.store import StateStore

    if limit < 1:
        raise click.BadParameter("must be 1 or more", param_hint="--limit")
    _check_job(job)
    settings = load(ctx, config_path)
    state = StateStore(settings.state.url)
    try:
        records = state.list_runs(job, limit=limit)
        stats = load_stats(state, [r.run_id for r in records])
        reads = reads_by_job(state, datetime.now(UTC) - BUDGET_WINDOW) if records else {}
    finally:
        state.close()
    budget = settings.stripe.monthly_read_budget
    if as_json:
        _echo_json(
            {
                "runs": [_run_json(r, stats.get(r.run_id)) for r in records],
                "reads_last_30_days": {
                    "total": sum(reads.values()),
                    "by_job": reads,
                    "monthly_read_budget": budget,
                },
            }
        )
        return
    click.echo(format_runs(records, stats))
    if records:
        click.echo(format_reads_line(reads, budget))


@runs.command("show")
@click.argument("run_id")
@click.option(
    "--kind", default=None, help="Print the run's findings of this kind (read from its report)."
)
@config_option
@_JSON_OPTION
@click.pass_context
def show(
    ctx: click.Context, run_id: str, kind: str | None, config_path: Path | None, as_json: bool
) -> None:
    """Show one run: status, times, findings by kind, requests by endpoint, 429s, errors."""
    from reconcile.rules.findings import FindingKind
    from reconcile.state.history import format_run, load_stats, resumed_from
    from reconcile.state.store import StateStore

    known = [k.value for k in FindingKind]
    if kind is not None and kind not in known:
        raise ConfigError(
            f"--kind {kind}: no finding kind is called that; the kinds are {', '.join(known)}"
        )
    state = StateStore(load(ctx, _config_path(ctx, config_path)).state.url)
    try:
        record = _require_run(state, run_id)
        stats = load_stats(state, [run_id]).get(run_id)
        resumed = resumed_from(state, run_id)
    finally:
        state.close()
    if kind is not None:
        _show_kind(record, kind, as_json)
    elif as_json:
        _echo_json(
            {
                **_run_json(record, stats),
                "requests_by_endpoint": dict(sorted(record.requests.items())),
                "resumed_from": resumed,
                "changes": _summary_changes(record),
            }
        )
    else:
        click.echo(format_run(record, stats, resumed))


def _show_kind(record: RunRecord, kind: str, as_json: bool) -> None:
    findings = _findings_of(record)
    rows = _rows(findings[findings["kind"] == kind])
    if as_json:
        _echo_json({"run_id": record.run_id, "kind": kind, "count": len(rows), "findings": rows})
        return
    if not rows:
        click.echo(f"no {kind} findings in run {record.run_id}")
        return
    severity = rows[0]["severity"]
    click.echo(f"{kind} ({severity}): {len(rows)} in run {record.run_id}")
    actions = sorted({row["suggested_action"] for row in rows if row["suggested_action"]})
    for action in actions:
        click.echo(f"suggested action: {action}")
    for line in _findings_text(rows, skip=("kind", "severity")):
        click.echo(line)
    if record.report_dir:
        click.echo(f"every column: {Path(record.report_dir) / f'findings-{kind}.csv'}")


@runs.command("diff")
@click.argument("run_a", required=False, metavar="[A]")
@click.argument("run_b", required=False, metavar="[B]")
@click.option(
    "--job",
    default=None,
    help="The job whose last two completed runs to compare [default: reconcile].",
)
@config_option
@_JSON_OPTION
@click.pass_context
def diff(
    ctx: click.Context,
    run_a: str | None,
    run_b: str | None,
    job: str | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """New and resolved findings between two runs: A (older) and B (newer).

    Without A and B: the last two completed runs of --job (in the mode of the last).
    With only A: that run against the completed run of its job and mode before it.
    """
    from reconcile.rules.changes import diff_findings
    from reconcile.state.store import StateStore
    from reports.changes import completed_runs, previous_completed_run

    parent_obj = (ctx.parent.obj if ctx.parent is not None else None) or {}
    job = job or parent_obj.get("runs_job") or "reconcile"
    _check_job(job)
    state = StateStore(load(ctx, _config_path(ctx, config_path)).state.url)
    try:
        if run_a is not None and run_b is not None:
            older, newer = _require_run(state, run_a), _require_run(state, run_b)
            if older.job != newer.job:
                raise ConfigError(
                    f"runs {older.run_id} ({older.job}) and {newer.run_id} ({newer.job}) "
                    "are of different jobs: compare two runs of one job"
                )
            if older.started_at > newer.started_at:
                older, newer = newer, older
        else:
            if run_a is not None:
                newer = _require_run(state, run_a)
            else:
                latest = completed_runs(state, job)
                if not latest:
                    raise ConfigError(f"no completed {job} run is recorded: nothing to compare")
                newer = latest[0]
            before = previous_completed_run(state, newer.job, newer.mode, before=newer)
            if before is None:
                raise ConfigError(
                    f"run {newer.run_id} is the first completed {newer.job} run in "
                    f"{newer.mode or 'its'} mode: nothing to compare it with"
                )
            older = before
    finally:
        state.close()
    changes = diff_findings(_findings_of(older), _findings_of(newer))
    new, resolved = _rows(changes.new), _rows(changes.resolved)
    if as_json:
        _echo_json(
            {
                "job": newer.job,
                "from": {
                    "run_id": older.run_id,
                    "started_at": _iso(older.started_at),
                    "mode": older.mode,
                },
                "to": {
                    "run_id": newer.run_id,
                    "started_at": _iso(newer.started_at),
                    "mode": newer.mode,
                },
                "counts": {
                    "new": len(new),
                    "resolved": len(resolved),
                    "still_open": changes.still_open,
                },
                "new": new,
                "resolved": resolved,
            }
        )
        return
    click.echo(
        f"{newer.job}: run {older.run_id} ({_when(older.started_at)}) -> run {newer.run_id} "
        f"({_when(newer.started_at)}): {len(new)} new, {len(resolved)} resolved, "
        f"{changes.still_open} still open"
    )
    for title, rows in (("new", new), ("resolved", resolved)):
        click.echo(f"{title} ({len(rows)}):" if rows else f"{title}: none")
        for line in _findings_text(rows) if rows else []:
            click.echo(f"  {line}")
