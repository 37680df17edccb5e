"""`stripe-reconcile run <job>` for the jobs that write: dry run unless --apply."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from jobs.apply import CONFIRM_LIVE_ENV
from jobs.commands.support import config_option, fail_on_option, load, out_option
from jobs.delivery import email_option
from reconcile.job_options import DEFAULT_MAX_CHANGES

__all__ = ["MAINTENANCE_COMMANDS", "format_plan_line", "write_options"]

F = TypeVar("F", bound=Callable[..., Any])


def write_options(func: F) -> F:
    """--apply, --max-changes, --confirm-live, --fail-on and --email, shared by every job
    that writes (the options of reconcile.job_options.WriteJobOptions)."""
    func = email_option(func)
    func = fail_on_option(func)
    func = click.option(
        "--confirm-live",
        is_flag=True,
        help=f"Allow --apply in live mode (unattended: {CONFIRM_LIVE_ENV}=1).",
    )(func)
    func = click.option(
        "--max-changes",
        type=click.IntRange(min=0),
        default=DEFAULT_MAX_CHANGES,
        show_default=True,
        help="Refuse, before the first write, a plan with more changes than this.",
    )(func)
    return click.option(
        "--apply",
        "apply_",
        is_flag=True,
        help="Carry the plan out (default: dry run, writes plan.csv only).",
    )(func)


def format_plan_line(summary: dict[str, Any]) -> str:
    planned = summary.get("planned_changes", 0)
    skipped = summary.get("skipped", 0)
    if summary.get("dry_run", True):
        return (
            f"  dry run: {planned} change(s) planned, {skipped} skipped; nothing written "
            "(see plan.csv; --apply to carry it out)"
        )
    return (
        f"  applied {summary.get('applied', 0)}, unchanged {summary.get('unchanged', 0)}, "
        f"failed {summary.get('failed', 0)} of {planned} planned; {skipped} skipped, "
        f"{summary.get('changed_meanwhile', 0)} changed since the listing (see audit.csv)"
    )


def _run_write_job(
    ctx: click.Context,
    job_name: str,
    config_path: Path | None,
    out_dir: Path | None,
    apply_: bool,
    max_changes: int,
    confirm_live: bool,
    fail_on: str | None,
    email: bool | None,
    **extra: Any,
) -> None:
    from jobs.options import parse_job_options, run_job
    from jobs.registry import JOBS
    from jobs.summary import format_summary

    settings = load(ctx, config_path)
    options = parse_job_options(
        job_name,
        {
            "apply": apply_,
            "max_changes": max_changes,
            "confirm_live": confirm_live,
            "fail_on": fail_on,
            "email": email,
            **extra,
        },
        where=f"run {job_name}",
    )
    outcome = run_job(JOBS[job_name], settings, options, out_dir=out_dir)
    click.echo(format_summary(outcome.summary))
    click.echo(format_plan_line(outcome.summary))
    click.echo(str(outcome.run_dir))
    ctx.exit(outcome.exit_code)


def _write_command(name: str, help_text: str) -> click.Command:
    """A `run NAME` command with the common write options and nothing else."""

    @click.command(name, help=help_text)
    @config_option
    @out_option
    @write_options
    @click.pass_context
    def command(
        ctx: click.Context,
        config_path: Path | None,
        out_dir: Path | None,
        apply_: bool,
        max_changes: int,
        confirm_live: bool,
        fail_on: str | None,
        email: bool | None,
    ) -> None:
        _run_write_job(
            ctx, name, config_path, out_dir, apply_, max_changes, confirm_live, fail_on, email
        )

    return command


sync_metadata = _write_command(
    "sync-metadata", "Push mapped user columns into Stripe metadata, one update per customer."
)


@click.command("link-users")
@config_option
@out_option
@write_options
@click.option(
    "--create-missing",
    is_flag=True,
    help="Also create a customer for each user that has none and matches none.",
)
@click.pass_context
def link_users(
    ctx: click.Context,
    config_path: Path | None,
    out_dir: Path | None,
    apply_: bool,
    max_changes: int,
    confirm_live: bool,
    fail_on: str | None,
    email: bool | None,
    create_missing: bool,
) -> None:
    """Write the customer id of each unlinked user with exactly one match into the user DB."""
    _run_write_job(
        ctx,
        "link-users",
        config_path,
        out_dir,
        apply_,
        max_changes,
        confirm_live,
        fail_on,
        email,
        create_missing=create_missing,
    )


dedupe = _write_command(
    "dedupe", "Delete safe duplicate customers; tag the others with metadata.duplicate_of."
)
gdpr_delete = _write_command(
    "gdpr-delete",
    "Delete the Stripe customer of each soft-deleted user, then clear the local link.",
)
default_payment_method = _write_command(
    "default-payment-method",
    "Make the newest unexpired card the default of customers that have cards but none.",
)

MAINTENANCE_COMMANDS: tuple[click.Command, ...] = (
    sync_metadata,
    link_users,
    dedupe,
    gdpr_delete,
    default_payment_method,
)
