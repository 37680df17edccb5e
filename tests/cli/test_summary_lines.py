"""The lines a person reads on stdout after a run."""

from __future__ import annotations

from typing import Any

from jobs.summary import format_summary

BASE: dict[str, Any] = {
    "job": "reconcile",
    "run_id": "20261127T030000Z-abc123",
    "mode": "test",
    "duration_seconds": 2.04,
    "customers_scanned": 1998,
    "users_scanned": 2056,
    "requests_total": 28,
    "counts_by_kind": {"orphan_customer": 16, "stale_metadata": 56},
}


def test_a_run_after_another_says_what_changed_since() -> None:
    changes = {"since_run": "20261126T030000Z-def456", "new": 3, "resolved": 5, "still_open": 69}
    text = format_summary({**BASE, "changes": changes})
    assert text.splitlines()[-1] == (
        "  since run 20261126T030000Z-def456: 3 new, 5 resolved, 69 still open"
    )


def test_a_first_run_says_nothing_about_changes() -> None:
    first = {"since_run": None, "new": 0, "resolved": 0, "still_open": 0, "reason": "first run"}
    for summary in (BASE, {**BASE, "changes": first}, {**BASE, "changes": None}):
        text = format_summary(summary)
        assert "since run" not in text
        assert text.splitlines()[-1] == "  stale_metadata        56"
