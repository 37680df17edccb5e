"""What every command shares: one-line errors with exit codes, and the common options."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from reconcile.errors import EXIT_CONFIG, ReconcileError
from reconcile.logs import get_logger, redact_text
from reconcile.settings import Settings, load_settings

__all__ = [
    "EXIT_INTERNAL",
    "ReconcileClickError",
    "ReconcileGroup",
    "config_option",
    "fail_on_option",
    "load",
    "out_option",
]

F = TypeVar("F", bound=Callable[..., Any])
EXIT_INTERNAL = 70
log = get_logger(__name__)


class ReconcileClickError(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        # click declares exit_code on the class; the instance's own value shadows it.
        vars(self)["exit_code"] = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"stripe-reconcile: error: {self.format_message()}", err=True)


class ReconcileGroup(click.Group):
    """Turns the project's errors (and any surprise) into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReconcileError as exc:
            raise ReconcileClickError(redact_text(exc.message), exc.exit_code) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            raise ReconcileClickError("interrupted; nothing half-written was kept", 130) from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise ReconcileClickError(
                f"{exc.strerror or exc}{where}: check the path, its permissions and free space",
                EXIT_CONFIG,
            ) from None
        except Exception as exc:
            log.exception("internal error")
            raise ReconcileClickError(
                f"internal error ({type(exc).__name__}: {redact_text(str(exc))[:200]}); "
                "this is a bug: please report it with the log",
                EXIT_INTERNAL,
            ) from None


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="TOML configuration file (default: $STRIPE_RECONCILE_CONFIG, else built-in defaults).",
    )(func)


def load(ctx: click.Context, config_path: Path | None) -> Settings:
    """Settings from the command's --config, else the group's, else the environment."""
    root = ctx.find_root()
    return load_settings(config_path or (root.obj or {}).get("config_path"))


def fail_on_option(func: F) -> F:
    return click.option(
        "--fail-on",
        type=click.Choice(["info", "warning", "error"]),
        default=None,
        help="Exit 1 when a finding of this severity or worse is reported.",
    )(func)


def out_option(func: F) -> F:
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="Output folder (default: [reports] out, ./output).",
    )(func)
