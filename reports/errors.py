"""The reports' own error: a run folder could not be written."""

from __future__ import annotations

from reconcile.errors import ReconcileError

__all__ = ["ReportWriteError"]


class ReportWriteError(ReconcileError):
    """The run folder could not be written; nothing partial was left behind."""

    exit_code = 1
