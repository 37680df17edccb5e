"""The few lines a person reads on stdout after a run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["format_summary"]


def format_summary(summary: Mapping[str, Any]) -> str:
    counts: Mapping[str, int] = summary.get("counts_by_kind", {})
    scanned = ", ".join(
        f"{summary[key]} {label}"
        for key, label in (("customers_scanned", "customers"), ("users_scanned", "users"))
        if key in summary
    )
    lines = [
        f"{summary['job']} run {summary['run_id']} ({summary['mode']} mode): "
        f"{scanned or 'done'} in {summary['duration_seconds']:.1f} s, "
        f"{summary.get('requests_total', 0)} Stripe requests",
    ]
    if counts:
        width = max(len(kind) for kind in counts)
        lines += [f"  {kind:<{width}}  {count:>7}" for kind, count in counts.items()]
    else:
        lines.append("  no findings")
    changes = summary.get("changes")
    if isinstance(changes, Mapping) and changes.get("since_run"):
        lines.append(
            f"  since run {changes['since_run']}: {changes.get('new', 0)} new, "
            f"{changes.get('resolved', 0)} resolved, {changes.get('still_open', 0)} still open"
        )
    return "\n".join(lines)
