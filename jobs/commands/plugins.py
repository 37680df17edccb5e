"""Commands other packages add to `stripe-reconcile` through an entry-point group.

The sandbox and the demo live outside the product (the `sandbox` extra) and register
themselves under `stripe_reconcile.commands`; the CLI finds them by name in the installed
metadata and imports one only when it is invoked, or when `--help` lists the commands.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any, NoReturn

import click

from jobs.commands.support import ReconcileClickError, ReconcileGroup
from reconcile.errors import EXIT_CONFIG

__all__ = ["ENTRY_POINT_GROUP", "PLUGIN_EXTRA", "PluginGroup"]

ENTRY_POINT_GROUP = "stripe_reconcile.commands"
# The extra that brings what the registered commands import (aiohttp for the sandbox).
PLUGIN_EXTRA = "sandbox"


def _unavailable(name: str, error: ImportError) -> click.Command:
    """A stand-in that lists the command and, when run, says in one line how to get it."""
    fix = f"pip install 'stripe-reconcile[{PLUGIN_EXTRA}]'"

    def fail(**_: Any) -> NoReturn:
        raise ReconcileClickError(
            f"`{name}` is not available ({error}): install it with {fix}", EXIT_CONFIG
        )

    return click.Command(
        name,
        callback=fail,
        help=f"Not installed: {fix}",
        short_help=f"(not installed: {fix})",
        # Its real options are unknown here: any arguments reach the one-line error.
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )


class PluginGroup(ReconcileGroup):
    """The built-in commands, then those registered under `ENTRY_POINT_GROUP`."""

    _plugins: dict[str, EntryPoint] | None = None

    def plugins(self) -> dict[str, EntryPoint]:
        # Read once per process, and only when a name is not built in: `run ...` never
        # scans the installed metadata.
        if self._plugins is None:
            self._plugins = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return self._plugins

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.plugins()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        entry = self.plugins().get(cmd_name)
        if entry is None:
            return None
        try:
            loaded = entry.load()
        except ImportError as exc:
            return _unavailable(cmd_name, exc)
        if not isinstance(loaded, click.Command):
            raise TypeError(f"entry point {entry.value!r} is not a click command")
        self.add_command(loaded, cmd_name)
        return loaded
