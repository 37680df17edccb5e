"""What every command shares: one-line errors with exit codes, the common options, and
commands attached by name and imported only when used.

Importing this module costs click and nothing heavier: `stripe-reconcile --help` and
`run --help` must not wait for pandas, the Stripe SDK or SQLAlchemy, which only the
commands that use them import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from reconcile.errors import EXIT_CONFIG, EXIT_INTERNAL, ReconcileError

if TYPE_CHECKING:
    from reconcile.settings import Settings

__all__ = [
    "EXIT_INTERNAL",
    "LazyCommands",
    "ReconcileClickError",
    "ReconcileGroup",
    "apply_pending_logging",
    "config_option",
    "defer_logging",
    "fail_on_option",
    "load",
    "out_option",
]

F = TypeVar("F", bound=Callable[..., Any])


class ReconcileClickError(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        # click declares exit_code on the class; the instance's own value shadows it.
        vars(self)["exit_code"] = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"stripe-reconcile: error: {self.format_message()}", err=True)


@dataclass(frozen=True)
class _Pending:
    load: Callable[[], click.Command]
    # The command's help, for its line in the group's --help before it is loaded.
    help: str


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands, some known only by name and help until first looked up.

    click reads a group's `commands` as a mapping, so lookups, listings and tests that
    walk `group.commands` see every command; only a lookup imports one.
    """

    def __init__(self) -> None:
        self._loaded: dict[str, click.Command] = {}
        self._pending: dict[str, _Pending] = {}
        self._order: list[str] = []

    def add_lazy(self, name: str, load: Callable[[], click.Command], help: str) -> None:
        self._loaded.pop(name, None)
        self._pending[name] = _Pending(load, help)
        if name not in self._order:
            self._order.append(name)

    def pending_help(self, name: str) -> str | None:
        """The declared help of a command not loaded yet; None once loaded (or unknown)."""
        pending = self._pending.get(name)
        return None if pending is None else pending.help

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            pending = self._pending.pop(name)  # KeyError for an unknown name, as a dict
            self._loaded[name] = pending.load()
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._pending.pop(name, None)
        self._loaded[name] = command
        if name not in self._order:
            self._order.append(name)

    def __delitem__(self, name: str) -> None:
        if self._loaded.pop(name, None) is None and self._pending.pop(name, None) is None:
            raise KeyError(name)
        self._order.remove(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._loaded or name in self._pending


class ReconcileGroup(click.Group):
    """Turns the project's errors (and any surprise) into one line and an exit code.

    Its commands may be attached lazily (`add_lazy_command`): the group's --help lists
    them from their declared help without importing them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lazy = LazyCommands()
        for name, command in self.commands.items():
            lazy[name] = command
        self.commands = lazy

    def add_lazy_command(self, name: str, load: Callable[[], click.Command], help: str) -> None:
        """Attach `name`, built by `load()` when first looked up; `help` is what --help
        lists until then (tests/cli checks it against the loaded command's)."""
        commands = self.commands
        assert isinstance(commands, LazyCommands)
        commands.add_lazy(name, load, help)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows: list[tuple[str, str]] = []
        commands = self.commands
        for name in names:
            declared = commands.pending_help(name) if isinstance(commands, LazyCommands) else None
            if declared is not None:
                stand_in = click.Command(name, help=declared)
                rows.append((name, stand_in.get_short_help_str(limit)))
                continue
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        # A group's own --help has exited by now; what runs next logs.
        apply_pending_logging(ctx)
        try:
            return super().invoke(ctx)
        except ReconcileError as exc:
            from reconcile.logs import redact_text

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
            from reconcile.logs import get_logger, redact_text

            get_logger(__name__).exception("internal error")
            raise ReconcileClickError(
                f"internal error ({type(exc).__name__}: {redact_text(str(exc))[:200]}); "
                "this is a bug: please report it with the log",
                EXIT_INTERNAL,
            ) from None


_PENDING_LOGGING = "pending_logging"


def defer_logging(ctx: click.Context, level: str, log_format: str | None) -> None:
    """Configure logging once a command is about to run, not for `GROUP --help`: the
    logging libraries cost more than the rest of a help screen."""
    ctx.ensure_object(dict)
    ctx.obj[_PENDING_LOGGING] = (level, log_format)
    group = ctx.command
    name = ctx.invoked_subcommand
    if not isinstance(group, click.Group) or name is None:
        apply_pending_logging(ctx)
        return
    # Groups configure it in ReconcileGroup.invoke, after their own --help is handled.
    if not isinstance(group.get_command(ctx, name), ReconcileGroup):
        apply_pending_logging(ctx)


def apply_pending_logging(ctx: click.Context) -> None:
    obj = ctx.find_root().obj
    pending = obj.pop(_PENDING_LOGGING, None) if isinstance(obj, dict) else None
    if pending is not None:
        from reconcile.logs import configure_logging

        level, log_format = pending
        configure_logging(level, log_format=log_format)


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
    from reconcile.settings import load_settings

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
