"""Run ids: a module of its own, so a run names itself before pandas is imported."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

__all__ = ["new_run_id"]


def new_run_id(now: datetime) -> str:
    """`20261121T210501Z-3f9a1c`: UTC second, then randomness; sorts by time, safe as a name."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("new_run_id needs an aware datetime, e.g. datetime.now(UTC)")
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
