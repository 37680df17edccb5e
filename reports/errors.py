"""The reports' own error: a run folder could not be written."""

from __future__ import annotations

from reconcile.errors import EXIT_CONFIG, ReconcileError

__all__ = ["ReportWriteError"]


class ReportWriteError(ReconcileError):
    """The run folder could not be written; nothing partial was left behind.

    Exit code 2, as the README's table has it for an unwritable output folder: 1 means
    "--fail-on matched", which a scheduler must not confuse with a lost report.
    """

    exit_code = EXIT_CONFIG
