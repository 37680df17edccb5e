"""What `stripe-reconcile run <job>` prints for the jobs that write (dry run unless --apply);
the commands themselves are built from the jobs' options models in jobs.commands.run_jobs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["format_plan_line", "max_changes_warning"]


def format_plan_line(summary: Mapping[str, Any]) -> str:
    planned = summary.get("planned_changes", 0)
    skipped = summary.get("skipped", 0)
    if summary.get("dry_run", True):
        return (
            f"  dry run: {planned} change(s) planned, {skipped} skipped; nothing written "
            "(see plan.csv; --apply to carry it out)"
        )
    return (
        f"  applied {summary.get('applied', 0)}, unchanged {summary.get('unchanged', 0)}, "
        f"failed {summary.get('failed', 0)} of {planned} planned; {skipped} skipped, "
        f"{summary.get('changed_meanwhile', 0)} changed since the listing (see audit.csv)"
    )


def max_changes_warning(summary: Mapping[str, Any], max_changes: int | None) -> str | None:
    """One line when a dry run planned more changes than --max-changes lets --apply make."""
    planned = summary.get("planned_changes")
    if max_changes is None or not summary.get("dry_run", False) or not isinstance(planned, int):
        return None
    if planned <= max_changes:
        return None
    return (
        f"warning: planned {planned} changes, --max-changes {max_changes}: --apply would "
        f"refuse this plan (review plan.csv, then pass --max-changes {planned} to allow it)"
    )
