"""Checkpoints of a customer listing, so a killed run resumes.

The statements live with the state database (reconcile.state.checkpoints); the listing
layer uses them through the names re-exported here, and owns the stop a listing obeys.
"""

from __future__ import annotations

from reconcile.errors import ReconcileError
from reconcile.state.checkpoints import (
    CheckpointStore,
    ListingRecord,
    PageStored,
    WindowCheckpoint,
    WindowCut,
)

__all__ = [
    "CheckpointStore",
    "ListingRecord",
    "PageStored",
    "RunInterrupted",
    "WindowCheckpoint",
    "WindowCut",
]


class RunInterrupted(ReconcileError):
    """A stop was asked for (SIGTERM in `serve`); the listing stopped at a checkpoint."""

    exit_code = 130
