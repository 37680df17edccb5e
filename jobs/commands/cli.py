"""The `stripe-reconcile` command: thin click shells over library calls.

Library errors become one line on stderr and the exit code their class carries;
no traceback reaches the user.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from jobs.commands.runs import incremental_option
from jobs.commands.support import ReconcileGroup, config_option, fail_on_option, load, out_option
from jobs.delivery import email_option
from jobs.registry import JOBS
from reconcile.logs import configure_logging

__all__ = ["cli", "main"]


@click.group(cls=ReconcileGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML configuration file (default: $STRIPE_RECONCILE_CONFIG, else built-in defaults).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Least severe log events to write to stderr [default: info; warning for demo].",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "console"]),
    default=None,
    help=(
        "How log lines look, libraries' included: json (one object a line) or console "
        "[default: console on a terminal, json otherwise]."
    ),
)
@click.version_option(package_name="stripe-reconcile")
@click.pass_context
def cli(
    ctx: click.Context, config_path: Path | None, log_level: str | None, log_format: str | None
) -> None:
    """Reconcile Stripe customers with your user database, and repair them safely."""
    configure_logging(
        log_level or ("warning" if ctx.invoked_subcommand == "demo" else "info"),
        log_format=log_format,
    )
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


@cli.group(cls=ReconcileGroup)
def run() -> None:
    """Run one job now (dry run unless the job says otherwise)."""


@run.command("reconcile")
@incremental_option
@config_option
@out_option
@fail_on_option
@email_option
@click.pass_context
def run_reconcile(
    ctx: click.Context,
    incremental: bool | None,
    config_path: Path | None,
    out_dir: Path | None,
    fail_on: str | None,
    email: bool | None,
) -> None:
    """Find duplicates, orphans, missing and unlinked customers, and stale metadata."""
    from jobs.options import parse_job_options, run_job
    from jobs.summary import format_summary

    settings = load(ctx, config_path)
    options = parse_job_options(
        "reconcile",
        {"incremental": incremental, "fail_on": fail_on, "email": email},
        where="run reconcile",
    )
    outcome = run_job(JOBS["reconcile"], settings, options, out_dir=out_dir)
    click.echo(format_summary(outcome.summary))
    click.echo(str(outcome.run_dir))
    ctx.exit(outcome.exit_code)


@cli.command()
@config_option
@click.pass_context
def check(ctx: click.Context, config_path: Path | None) -> None:
    """Preflight: key, Stripe, Redis, user and state databases, report folder, SMTP, Pushgateway."""
    from jobs.commands.check import run_checks

    settings = load(ctx, config_path)
    ok = run_checks(settings, click.echo)
    ctx.exit(0 if ok.passed else ok.exit_code)


@cli.command()
@click.option("--customers", default=3000, show_default=True, help="Customers to seed.")
@click.option("--seed", default=7, show_default=True, help="Seed of the generated account.")
@out_option
@click.pass_context
def demo(ctx: click.Context, customers: int, seed: int, out_dir: Path | None) -> None:
    """Start the sandbox, seed an account with planted anomalies, run every read-only job."""
    from sandbox.demo import run_demo

    if customers < 50 or customers > 200_000:
        raise click.BadParameter("must be between 50 and 200000", param_hint="--customers")
    run_demo(customers=customers, seed=seed, out_dir=out_dir or Path("output"), echo=click.echo)


@cli.command()
@click.option("--port", default=12111, show_default=True, help="Port to listen on (0 = any).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--seed-customers", default=0, show_default=True, help="Seed test mode.")
@click.option("--seed", default=0, show_default=True, help="Seed of the generated account.")
@click.option("--latency-ms", default=0.0, show_default=True, help="Added to every response.")
@click.option("--jitter-ms", default=0.0, show_default=True, help="Random extra latency, 0..N.")
@click.option("--no-rate-limits", is_flag=True, help="Never answer 429.")
@click.option(
    "--users-db",
    default=None,
    help="With --seed-customers: write the matching users table here (SQLite path or URL).",
)
@click.option(
    "--ground-truth",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="With --seed-customers: write the planted anomalies here (JSON).",
)
def sandbox(
    port: int,
    host: str,
    seed_customers: int,
    seed: int,
    latency_ms: float,
    jitter_ms: float,
    no_rate_limits: bool,
    users_db: str | None,
    ground_truth: Path | None,
) -> None:
    """Serve the Stripe-compatible sandbox in the foreground (Ctrl-C stops it)."""
    if not 0 <= port <= 65535:
        raise click.BadParameter("must be between 0 and 65535", param_hint="--port")
    if seed_customers < 0 or latency_ms < 0 or jitter_ms < 0:
        raise click.BadParameter("must not be negative", param_hint="--seed-customers/--latency-ms")
    if (users_db or ground_truth) and not seed_customers:
        raise click.BadParameter("needs --seed-customers N", param_hint="--users-db/--ground-truth")
    from sandbox.ratelimit import RateLimits
    from sandbox.runner import SandboxConfig, serve_forever

    serve_forever(
        SandboxConfig(
            host=host,
            port=port,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            seed_customers=seed_customers,
            seed=seed,
            limits=RateLimits(enabled=not no_rate_limits),
            users_db=users_db,
            ground_truth_path=ground_truth,
        )
    )


# Commands defined in their own modules are attached here, one line each.
from jobs.commands.card_expiry import run_card_expiry  # noqa: E402

run.add_command(run_card_expiry)
from jobs.commands.customer import customer  # noqa: E402
from jobs.commands.maintenance import MAINTENANCE_COMMANDS  # noqa: E402

for _command in MAINTENANCE_COMMANDS:
    run.add_command(_command)
cli.add_command(customer)
from jobs.commands.runs import add_resume_options, runs  # noqa: E402
from jobs.commands.schedule import schedule, serve  # noqa: E402

cli.add_command(serve)
cli.add_command(schedule)
cli.add_command(runs)
add_resume_options(run)  # last: every `run JOB` attached above gets --resume


def main() -> None:
    sys.exit(cli.main(prog_name="stripe-reconcile"))
