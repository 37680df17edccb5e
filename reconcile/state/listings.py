"""Questions about the stored listings asked from outside the CheckpointStore."""

from __future__ import annotations

from reconcile.state.checkpoints import other_listings

__all__ = ["other_listings"]
