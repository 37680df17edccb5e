"""What `stripe-reconcile run card-expiry` prints after the summary (the command itself is
built from the job's options model in jobs.commands.run_jobs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["reminder_lines"]


def reminder_lines(summary: Mapping[str, Any]) -> list[str]:
    return [f"  reminders: {summary.get('reminders', '')}"]
