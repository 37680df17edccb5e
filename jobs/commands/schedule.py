"""`stripe-reconcile serve` and `stripe-reconcile schedule`: the scheduler's two commands."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from jobs.commands.support import config_option, load
from reconcile.errors import ConfigError

__all__ = ["schedule", "serve"]


@click.command()
@config_option
@click.option(
    "--run-now",
    is_flag=True,
    help="Also start every scheduled job once right away (a first trial of a deployment).",
)
@click.pass_context
def serve(ctx: click.Context, config_path: Path | None, run_now: bool) -> None:
    """Run the [schedule] in the foreground; SIGTERM or Ctrl-C stops it cleanly."""
    from jobs.registry import JOBS
    from jobs.scheduler import serve as serve_schedule

    settings = load(ctx, config_path)
    serve_schedule(settings, JOBS, run_now=run_now)


@click.command()
@config_option
@click.option("--count", default=5, show_default=True, help="Fire times to show per job.")
@click.option(
    "--cron",
    "expression",
    default=None,
    help="Check this crontab expression instead of the configured jobs, e.g. '0 3 * * 1-5'.",
)
@click.pass_context
def schedule(
    ctx: click.Context, config_path: Path | None, count: int, expression: str | None
) -> None:
    """Show each scheduled job with its next fire times (UTC unless a timezone is set)."""
    from jobs.registry import JOBS
    from jobs.scheduler import (
        format_fire_times,
        next_fire_times,
        schedule_timezone,
        scheduled_jobs,
        trigger_for,
    )
    from reconcile.rules.crontab import parse_crontab

    if not 1 <= count <= 100:
        raise click.BadParameter("must be between 1 and 100", param_hint="--count")
    settings = load(ctx, config_path)
    tz = schedule_timezone(settings)
    now = datetime.now(UTC)
    if expression is not None:
        try:
            spec = parse_crontab(expression)
        except ValueError as exc:
            raise ConfigError(f"--cron: {exc}") from None
        click.echo(f"{expression}  ({settings.schedule.timezone})")
        for line in format_fire_times(next_fire_times(trigger_for(spec, tz), now, count)):
            click.echo(f"  {line}")
        return
    jobs = scheduled_jobs(settings, JOBS)
    if not jobs:
        click.echo('no jobs scheduled: add [schedule.jobs.NAME] sections with cron = "..."')
    for scheduled in jobs:
        click.echo(f"{scheduled.job.name}  {scheduled.entry.cron}  ({settings.schedule.timezone})")
        for line in format_fire_times(next_fire_times(scheduled.trigger, now, count)):
            click.echo(f"  {line}")
    unscheduled = sorted(set(JOBS) - {s.job.name for s in jobs})
    if unscheduled:
        click.echo(f"not scheduled: {', '.join(unscheduled)}")
