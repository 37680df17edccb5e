"""`stripe-reconcile runs [show ID]`, the `--resume` flag of every `run JOB` command, and
`--incremental/--full` of the read-only ones (reconcile, card-expiry)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from jobs.commands.support import ReconcileGroup, config_option, load
from jobs.resume import RESUME_REQUESTED
from reconcile.errors import ConfigError

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


@click.group(cls=ReconcileGroup, invoke_without_command=True)
@config_option
@click.option("--job", default=None, help="Only runs of this job.")
@click.option("--limit", default=20, show_default=True, help="How many runs, newest first.")
@click.pass_context
def runs(ctx: click.Context, config_path: Path | None, job: str | None, limit: int) -> None:
    """List recent runs: status, start, duration, findings, requests, 429s; reads in 30 days."""
    ctx.ensure_object(dict)
    ctx.obj["runs_config_path"] = config_path
    if ctx.invoked_subcommand is not None:
        return
    from reconcile.state.history import format_runs, load_stats
    from reconcile.state.store import StateStore

    if limit < 1:
        raise click.BadParameter("must be 1 or more", param_hint="--limit")
    from jobs.registry import JOBS

    if job is not None and job not in JOBS:
        # A misspelt job would list nothing, as if it had never run.
        raise ConfigError(
            f"--job {job}: no job is called {job!r}; the jobs are {', '.join(sorted(JOBS))}"
        )
    settings = load(ctx, config_path)
    state = StateStore(settings.state.url)
    try:
        records = state.list_runs(job, limit=limit)
        click.echo(format_runs(records, load_stats(state, [r.run_id for r in records])))
        if records:
            from reconcile.state.read_budget import BUDGET_WINDOW, format_reads_line, reads_by_job

            since = datetime.now(UTC) - BUDGET_WINDOW
            click.echo(
                format_reads_line(reads_by_job(state, since), settings.stripe.monthly_read_budget)
            )
    finally:
        state.close()


@runs.command("show")
@click.argument("run_id")
@config_option
@click.pass_context
def show(ctx: click.Context, run_id: str, config_path: Path | None) -> None:
    """Show one run: status, times, findings by kind, requests by endpoint, 429s, errors."""
    from reconcile.state.history import format_run, load_stats, resumed_from
    from reconcile.state.store import StateStore

    parent_obj = (ctx.parent.obj if ctx.parent is not None else None) or {}
    path = config_path or parent_obj.get("runs_config_path")
    state = StateStore(load(ctx, path).state.url)
    try:
        record = state.get_run(run_id)
        if record is None:
            raise ConfigError(
                f"run {run_id} is not recorded in the state database: "
                "`stripe-reconcile runs` lists the run ids"
            )
        stats = load_stats(state, [run_id]).get(run_id)
        click.echo(format_run(record, stats, resumed_from(state, run_id)))
    finally:
        state.close()
