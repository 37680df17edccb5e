"""The `stripe-reconcile` command: thin click shells over library calls.

Library errors become one line on stderr and the exit code their class carries;
no traceback reaches the user.

Start-up stays light: this module imports click and the job catalogue, nothing that
pulls in pandas, pyarrow, the Stripe SDK or SQLAlchemy. Commands in other modules are
attached by name (`add_lazy_command`) and imported when they run; `run JOB` commands
are built from the job registry on first use (jobs.commands.run_jobs).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import click

from jobs.commands.plugins import PluginGroup
from jobs.commands.run_jobs import attach_jobs
from jobs.commands.support import ReconcileGroup, config_option, defer_logging

__all__ = ["LAZY_COMMANDS", "cli", "main"]


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    defer_logging(
        ctx, log_level or ("warning" if ctx.invoked_subcommand == "demo" else "info"), log_format
    )


@cli.group(cls=ReconcileGroup)
def run() -> None:
    """Run one job now (dry run unless the job says otherwise)."""


attach_jobs(run)


@cli.command()
@config_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help=(
        "Print one JSON object (whether all passed, the exit code, each check's name, "
        "status and message) instead of the lines."
    ),
)
@click.pass_context
def check(ctx: click.Context, config_path: Path | None, as_json: bool) -> None:
    """Preflight: key, Stripe, Redis, user and state databases, report folder, SMTP, Pushgateway."""
    from jobs.commands.check import check_command

    check_command(ctx, config_path, as_json=as_json)


def _attribute(module: str, name: str) -> Callable[[], click.Command]:
    def loader() -> click.Command:
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command)
        return command

    return loader


# Commands of other modules: (name, module, attribute, help as `--help` lists it before
# the module is imported; tests/cli checks it against the command's own).
LAZY_COMMANDS: tuple[tuple[str, str, str, str], ...] = (
    (
        "customer",
        "jobs.commands.customer",
        "customer",
        "Find, create, update or delete one customer.",
    ),
    (
        "runs",
        "jobs.commands.runs",
        "runs",
        "List recent runs: status, start, duration, findings, requests, 429s; reads in 30 days.",
    ),
    (
        "serve",
        "jobs.commands.schedule",
        "serve",
        "Run the [schedule] in the foreground; SIGTERM or Ctrl-C stops it cleanly.",
    ),
    (
        "schedule",
        "jobs.commands.schedule",
        "schedule",
        "Show each scheduled job with its next fire times (UTC unless a timezone is set).",
    ),
)
for _name, _module, _attr, _help in LAZY_COMMANDS:
    cli.add_lazy_command(_name, _attribute(_module, _attr), _help)


def main() -> None:
    sys.exit(cli.main(prog_name="stripe-reconcile"))
