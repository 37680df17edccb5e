"""`stripe-reconcile run <job>` for the jobs that write: dry run unless --apply."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from jobs.apply import CONFIRM_LIVE_ENV, DEFAULT_MAX_CHANGES, confirm_live_from_env
from jobs.cli_support import config_option, load, out_option

__all__ = ["MAINTENANCE_COMMANDS", "format_plan_line", "write_options"]

F = TypeVar("F", bound=Callable[..., Any])


def write_options(func: F) -> F:
    """--apply, --max-changes and --confirm-live, shared by every job that writes."""
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
        f"failed {summary.get('failed', 0)} of {planned} planned; {skipped} skipped "
        "(see audit.csv)"
    )


def _run_write_job(
    ctx: click.Context,
    job_name: str,
    config_path: Path | None,
    out_dir: Path | None,
    apply_: bool,
    max_changes: int,
    confirm_live: bool,
    **extra: Any,
) -> None:
    from jobs.registry import JOBS
    from jobs.runner import execute_job
    from jobs.summary import format_summary

    settings = load(ctx, config_path)
    options = {
        "apply": apply_,
        "max_changes": max_changes,
        "confirm_live": confirm_live or confirm_live_from_env(os.environ),
        **extra,
    }
    outcome = execute_job(JOBS[job_name], settings, out_dir=out_dir, options=options)
    click.echo(format_summary(outcome.summary))
    click.echo(format_plan_line(outcome.summary))
    click.echo(str(outcome.run_dir))
    ctx.exit(outcome.exit_code)


@click.command("sync-metadata")
@config_option
@out_option
@write_options
@click.pass_context
def sync_metadata(
    ctx: click.Context,
    config_path: Path | None,
    out_dir: Path | None,
    apply_: bool,
    max_changes: int,
    confirm_live: bool,
) -> None:
    """Push mapped user columns into Stripe metadata, one update per customer."""
    _run_write_job(ctx, "sync-metadata", config_path, out_dir, apply_, max_changes, confirm_live)


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
        create_missing=create_missing,
    )


@click.command("dedupe")
@config_option
@out_option
@write_options
@click.pass_context
def dedupe(
    ctx: click.Context,
    config_path: Path | None,
    out_dir: Path | None,
    apply_: bool,
    max_changes: int,
    confirm_live: bool,
) -> None:
    """Delete safe duplicate customers; tag the others with metadata.duplicate_of."""
    _run_write_job(ctx, "dedupe", config_path, out_dir, apply_, max_changes, confirm_live)


@click.command("gdpr-delete")
@config_option
@out_option
@write_options
@click.pass_context
def gdpr_delete(
    ctx: click.Context,
    config_path: Path | None,
    out_dir: Path | None,
    apply_: bool,
    max_changes: int,
    confirm_live: bool,
) -> None:
    """Delete the Stripe customer of each soft-deleted user, then clear the local link."""
    _run_write_job(ctx, "gdpr-delete", config_path, out_dir, apply_, max_changes, confirm_live)


@click.command("default-payment-method")
@config_option
@out_option
@write_options
@click.pass_context
def default_payment_method(
    ctx: click.Context,
    config_path: Path | None,
    out_dir: Path | None,
    apply_: bool,
    max_changes: int,
    confirm_live: bool,
) -> None:
    """Make the newest unexpired card the default of customers that have cards but none."""
    _run_write_job(
        ctx, "default-payment-method", config_path, out_dir, apply_, max_changes, confirm_live
    )


MAINTENANCE_COMMANDS: tuple[click.Command, ...] = (
    sync_metadata,
    link_users,
    dedupe,
    gdpr_delete,
    default_payment_method,
)
