"""summary.html: a run read at a glance, rendered from summary.json's facts.

Jinja2 with autoescape: every value from Stripe or the user DB is escaped. The
chart is inline SVG drawn by the template from geometry computed here, so the
page has no script and no external asset and opens from a mail attachment.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

__all__ = ["ChartBar", "render_summary_html"]

# Facts shown first, in this order, under these labels; other scalar facts follow.
_FACT_LABELS: tuple[tuple[str, str], ...] = (
    ("job", "Job"),
    ("run_id", "Run id"),
    ("status", "Status"),
    ("mode", "Mode"),
    ("started_at", "Started"),
    ("finished_at", "Finished"),
    ("duration_seconds", "Duration"),
    ("customers_scanned", "Customers scanned"),
    ("users_scanned", "Users scanned"),
)
_HANDLED_KEYS = frozenset(
    {key for key, _ in _FACT_LABELS}
    | {"counts_by_kind", "counts_by_severity", "requests_by_endpoint"}
)

_CHART_LABEL_WIDTH = 220
_CHART_BAR_MAX = 360
_CHART_ROW_HEIGHT = 24


@dataclass(frozen=True)
class ChartBar:
    """One bar of the horizontal bar chart, in SVG user units."""

    label: str
    severity: str
    count: int
    y: int
    width: int


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _duration_text(seconds: Any) -> str:
    try:
        total = float(seconds)
    except (TypeError, ValueError):
        return str(seconds)
    if total < 60:
        return f"{total:.1f} s"
    minutes, rest = divmod(total, 60)
    if minutes < 60:
        return f"{int(minutes)} min {rest:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


def _fact_text(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "duration_seconds":
        return _duration_text(value)
    if "created" in key or key.endswith(("_at", "_timestamp")):
        return str(value)  # an epoch time reads wrong with thousands separators
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _facts(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    facts = [
        (label, _fact_text(key, summary[key])) for key, label in _FACT_LABELS if key in summary
    ]
    for key in sorted(summary):
        value = summary[key]
        if key in _HANDLED_KEYS or isinstance(value, (Mapping, list, tuple)):
            continue
        if value is None or value == "":
            continue
        facts.append((key.replace("_", " ").capitalize(), _fact_text(key, value)))
    return facts


def _chart(rows: Sequence[tuple[str, str, int]]) -> list[ChartBar]:
    largest = max((count for _, _, count in rows), default=0)
    bars = []
    for index, (kind, severity, count) in enumerate(rows):
        # A non-zero count always shows at least a sliver, so no kind looks absent.
        width = max(2, round(_CHART_BAR_MAX * count / largest)) if largest and count else 0
        bars.append(ChartBar(kind, severity, count, index * _CHART_ROW_HEIGHT, width))
    return bars


def render_summary_html(
    summary: Mapping[str, Any], kind_severity_counts: Sequence[tuple[str, str, int]]
) -> str:
    """The page for one run: facts, counts by kind and severity with a chart, requests."""
    requests = summary.get("requests_by_endpoint") or {}
    request_rows = sorted(
        ((str(endpoint), int(n)) for endpoint, n in dict(requests).items()),
        key=lambda row: (-row[1], row[0]),
    )
    bars = _chart(kind_severity_counts)
    title_job = str(summary.get("job", "run"))
    by_severity: dict[str, int] = {}
    for _, severity, count in kind_severity_counts:
        by_severity[severity] = by_severity.get(severity, 0) + count
    return (
        _environment()
        .get_template("summary.html.j2")
        .render(
            title=f"stripe-reconcile {title_job} {summary.get('run_id', '')}".strip(),
            facts=_facts(summary),
            kind_rows=list(kind_severity_counts),
            total_findings=sum(count for _, _, count in kind_severity_counts),
            severity_counts=[
                (severity, by_severity[severity])
                for severity in ("error", "warning", "info")
                if by_severity.get(severity)
            ],
            headline_facts=[
                text
                for key, text in (
                    ("status", str(summary.get("status", ""))),
                    ("mode", f"{summary.get('mode')} mode"),
                    ("duration_seconds", _duration_text(summary.get("duration_seconds"))),
                )
                if summary.get(key) is not None
            ],
            bars=bars,
            chart_label_width=_CHART_LABEL_WIDTH,
            chart_bar_max=_CHART_BAR_MAX,
            chart_row_height=_CHART_ROW_HEIGHT,
            chart_height=max(1, len(bars)) * _CHART_ROW_HEIGHT,
            request_rows=request_rows,
            total_requests=sum(n for _, n in request_rows),
        )
    )
