"""`stripe-reconcile run card-expiry`: a thin shell over the card-expiry job."""

from __future__ import annotations

from pathlib import Path

import click

from jobs.apply import CONFIRM_LIVE_ENV
from jobs.commands.runs import incremental_option
from jobs.commands.support import config_option, fail_on_option, load, out_option
from jobs.delivery import email_option

__all__ = ["run_card_expiry"]


@click.command("card-expiry")
@click.option(
    "--days",
    type=click.IntRange(0, 3650),
    default=None,
    help="Report cards expiring within this many days [default: [card_expiry] days, 30].",
)
@click.option(
    "--all-cards",
    is_flag=True,
    help="Every card of every customer (one request per customer), not only the defaults.",
)
@click.option("--send", is_flag=True, help="Email the due reminders (default: only list them).")
@click.option(
    "--confirm-live",
    is_flag=True,
    help=f"Allow --send in live mode (unattended: {CONFIRM_LIVE_ENV}=1).",
)
@incremental_option
@config_option
@out_option
@fail_on_option
@email_option
@click.pass_context
def run_card_expiry(
    ctx: click.Context,
    days: int | None,
    all_cards: bool,
    send: bool,
    confirm_live: bool,
    incremental: bool | None,
    config_path: Path | None,
    out_dir: Path | None,
    fail_on: str | None,
    email: bool | None,
) -> None:
    """Find expiring and expired cards and list (or --send) reminders to their customers."""
    from jobs.options import parse_job_options, run_job
    from jobs.registry import JOBS
    from jobs.summary import format_summary

    settings = load(ctx, config_path)
    options = parse_job_options(
        "card-expiry",
        {
            "days": days,
            "all_cards": all_cards,
            "send": send,
            "confirm_live": confirm_live,
            "incremental": incremental,
            "fail_on": fail_on,
            "email": email,
        },
        where="run card-expiry",
    )
    outcome = run_job(JOBS["card-expiry"], settings, options, out_dir=out_dir)
    click.echo(format_summary(outcome.summary))
    click.echo(f"  reminders: {outcome.summary.get('reminders', '')}")
    click.echo(str(outcome.run_dir))
    ctx.exit(outcome.exit_code)
