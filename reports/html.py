"""summary.html: a run a person acts on, rendered from summary.json's facts and the findings.

Top to bottom: the headline (job, mode, when in the run's time zone, dry run or not);
the plan of a write job; what to do, kind by kind, errors first, each with its suggested
action, its count, a sample of rows with the ids to paste into the Stripe dashboard and a
link to its CSV; what changed since the last run; then the run's facts and requests.

Jinja2 with autoescape: every value from Stripe or the user DB is escaped. The page has
no script, no SVG and no external asset, and its bars are table cells with inline
styles, so it survives mail clients (which drop SVG and often `<style>`) and a phone's
width (tables scroll inside their own box).
"""

from __future__ import annotations

import functools
import zoneinfo
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jinja2
import pandas as pd

from reconcile.settings import Settings
from reports.changes import RunChanges
from reports.email import PERSONAL_COLUMNS, redact_addresses

__all__ = [
    "SAMPLE_ROWS",
    "HtmlOptions",
    "KindSection",
    "html_options",
    "human_time",
    "load_template",
    "render_summary_html",
]

SAMPLE_ROWS = 20
SEVERITY_ORDER: tuple[str, ...] = ("error", "warning", "info")
SEVERITY_COLOURS: Mapping[str, str] = {
    "error": "#cf222e",
    "warning": "#9a6700",
    "info": "#0969da",
    "other": "#57606a",
}

# Facts shown first, in this order, under these labels; other scalar facts follow.
_FACT_LABELS: tuple[tuple[str, str], ...] = (
    ("job", "Job"),
    ("run_id", "Run id"),
    ("status", "Status"),
    ("mode", "Mode"),
    ("dry_run", "Dry run"),
    ("started_at", "Started"),
    ("finished_at", "Finished"),
    ("duration_seconds", "Duration"),
    ("customers_scanned", "Customers scanned"),
    ("users_scanned", "Users scanned"),
)
_HANDLED_KEYS = frozenset(
    {key for key, _ in _FACT_LABELS}
    | {"counts_by_kind", "counts_by_severity", "requests_by_endpoint", "changes"}
)
# Sample columns, in order, with their headings; empty columns are left out.
_SAMPLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("customer_id", "Customer"),
    ("user_id", "User"),
    ("email", "Email"),
    ("field", "Field"),
    ("stripe_value", "In Stripe"),
    ("local_value", "In your users table"),
    ("related_ids", "Related ids"),
    ("detail", "Detail"),
)
_PLAN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("action", "Action"),
    ("customer_id", "Customer"),
    ("user_id", "User"),
    ("reason", "Reason"),
)
_ACTION_SKIP = "skip"
_WITHHELD = "(withheld)"


@dataclass(frozen=True)
class HtmlOptions:
    """How the page is shown: the time zone of its times, and whether personal data
    (emails, names) may appear; `[email] include_personal_data` decides, since the page
    is the body of the emailed report."""

    timezone: str = "UTC"
    show_personal_data: bool = True
    sample_rows: int = SAMPLE_ROWS


def html_options(settings: Settings) -> HtmlOptions:
    """The page's options from the configuration: `[schedule] timezone`, and
    `[email] include_personal_data`."""
    return HtmlOptions(
        timezone=settings.schedule.timezone,
        show_personal_data=settings.email.include_personal_data,
    )


@dataclass(frozen=True)
class SampleTable:
    headings: list[str]
    columns: list[str]
    rows: list[list[str]]
    more: int  # rows not shown


@dataclass(frozen=True)
class KindSection:
    """One kind of finding: what it is, what to do about it, a sample and its CSV."""

    kind: str
    severity: str
    count: int
    actions: list[tuple[str, int]]
    sample: SampleTable
    csv_name: str
    bar_percent: int
    colour: str = field(default="#57606a")


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def load_template() -> jinja2.Template:
    """The summary page's template, compiled on the first call (jinja2 keeps it after)."""
    return _environment().get_template("summary.html.j2")


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and 946_684_800 <= value < 4_102_444_800:
        return datetime.fromtimestamp(value, UTC)  # epoch seconds from 2000 to 2100
    if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-":
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return None


def human_time(value: Any, timezone: str = "UTC") -> str:
    """`Sat 21 Nov 2026, 22:05:01 CET`: an ISO text, datetime or epoch in `timezone`;
    anything else as text."""
    when = _as_datetime(value)
    if when is None:
        return "" if value is None else str(value)
    local = when.astimezone(_zone(timezone))
    return f"{local:%a} {local.day} {local:%b %Y, %H:%M:%S} {local.tzname() or timezone}"


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


def _is_time_key(key: str) -> bool:
    return "created" in key or key.endswith(("_at", "_timestamp", "_time", "watermark"))


def _fact_text(key: str, value: Any, timezone: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "duration_seconds":
        return _duration_text(value)
    if _is_time_key(key) and _as_datetime(value) is not None:
        return human_time(value, timezone)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _facts(summary: Mapping[str, Any], timezone: str) -> list[tuple[str, str]]:
    facts = [
        (label, _fact_text(key, summary[key], timezone))
        for key, label in _FACT_LABELS
        if key in summary and summary[key] is not None
    ]
    for key in sorted(summary):
        value = summary[key]
        if key in _HANDLED_KEYS or isinstance(value, (Mapping, list, tuple)):
            continue
        if value is None or value == "":
            continue
        facts.append((key.replace("_", " ").capitalize(), _fact_text(key, value, timezone)))
    return facts


def _severity_rank(severity: str) -> int:
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else len(SEVERITY_ORDER)


def _severity_class(severity: str) -> str:
    return severity if severity in SEVERITY_ORDER else "other"


def _cell(row: Mapping[Any, Any], column: str, show_personal_data: bool) -> str:
    value = row.get(column)
    text = "" if value is None or (isinstance(value, float) and value != value) else str(value)
    if column == "related_ids":
        text = "; ".join(part for part in text.split(";") if part)  # a line may break there
    if show_personal_data or not text:
        return text
    if column in PERSONAL_COLUMNS:
        return _WITHHELD
    if column in ("stripe_value", "local_value") and row.get("field") in PERSONAL_COLUMNS:
        return _WITHHELD
    return redact_addresses(text)


def _sample(
    rows: pd.DataFrame,
    columns: Sequence[tuple[str, str]],
    limit: int,
    show_personal_data: bool,
) -> SampleTable:
    shown = rows.head(limit).to_dict("records")
    wanted = [
        (column, heading)
        for column, heading in columns
        if column in rows.columns
        and (show_personal_data or column not in PERSONAL_COLUMNS)
        and any(_cell(row, column, True) for row in shown)
    ]
    return SampleTable(
        headings=[heading for _, heading in wanted],
        columns=[column for column, _ in wanted],
        rows=[[_cell(row, column, show_personal_data) for column, _ in wanted] for row in shown],
        more=max(0, len(rows) - len(shown)),
    )


def _order_by_severity(findings: pd.DataFrame) -> pd.DataFrame:
    if len(findings) == 0:
        return findings
    rank = findings["severity"].map(lambda s: _severity_rank(str(s)))
    return findings.assign(_rank=rank).sort_values("_rank", kind="stable").drop(columns="_rank")


def _kind_sections(findings: pd.DataFrame, options: HtmlOptions) -> list[KindSection]:
    if len(findings) == 0:
        return []
    groups: list[tuple[str, str, pd.DataFrame]] = []
    for kind, rows in findings.groupby("kind", sort=False):
        worst = min((str(s) for s in rows["severity"]), key=_severity_rank)
        groups.append((str(kind), worst, rows))
    groups.sort(key=lambda g: (_severity_rank(g[1]), -len(g[2]), g[0]))
    largest = max(len(rows) for _, _, rows in groups)
    sections = []
    for kind, severity, rows in groups:
        actions = Counter(str(a) for a in rows["suggested_action"] if str(a))
        sections.append(
            KindSection(
                kind=kind,
                severity=severity,
                count=len(rows),
                actions=sorted(actions.items(), key=lambda a: (-a[1], a[0])),
                sample=_sample(
                    rows, _SAMPLE_COLUMNS, options.sample_rows, options.show_personal_data
                ),
                csv_name=f"findings-{kind}.csv",
                # A non-zero count always shows at least a sliver, so no kind looks absent.
                bar_percent=max(1, round(100 * len(rows) / largest)),
                colour=SEVERITY_COLOURS[_severity_class(severity)],
            )
        )
    return sections


@dataclass(frozen=True)
class PlanView:
    title: str
    dry_run: bool
    writes: int
    skips: int
    by_action: list[tuple[str, int]]
    sample: SampleTable
    link: str | None
    verdict: list[tuple[str, bool]]  # (text, is a command-line flag)
    refused: bool
    outcome: list[tuple[str, int]]


def _verdict(
    summary: Mapping[str, Any], writes: int, dry_run: bool
) -> tuple[list[tuple[str, bool]], bool]:
    """What --apply does (or did) with the plan, as (text, is a flag) parts; and whether
    the plan is (or would be) refused."""
    if summary.get("status") == "refused":
        return [(str(summary.get("refused") or "--apply refused this plan."), False)], True
    limit = summary.get("max_changes")
    changes = f"{writes:,} change{'' if writes == 1 else 's'}"
    if not writes:
        return [("Nothing to change.", False)], False
    if not isinstance(limit, int):
        return [(f"{changes} planned.", False)], False
    if writes > limit:
        return [
            ("--apply", True),
            (f" would refuse this plan: {changes}, more than ", False),
            (f"--max-changes {limit}", True),
            (". Review the plan, then run again with ", False),
            (f"--apply --max-changes {writes}", True),
            (".", False),
        ], True
    if dry_run:
        return [
            ("--apply", True),
            (f" would carry out these {changes} (within ", False),
            (f"--max-changes {limit}", True),
            (").", False),
        ], False
    return [(f"{changes}, within ", False), (f"--max-changes {limit}", True), (".", False)], False


def _plan_view(
    summary: Mapping[str, Any],
    plan: pd.DataFrame | None,
    links: Collection[str],
    options: HtmlOptions,
) -> PlanView | None:
    if plan is None or "action" not in plan.columns:
        return None
    dry_run = bool(summary.get("dry_run", True))
    actions = [str(a) for a in plan["action"]]
    writes = sum(1 for a in actions if a != _ACTION_SKIP)
    skips = len(actions) - writes
    counted = Counter(actions)
    by_action = sorted(counted.items(), key=lambda a: (a[0] == _ACTION_SKIP, -a[1], a[0]))
    verdict, refused = _verdict(summary, writes, dry_run)
    was_refused = summary.get("status") == "refused"
    if was_refused:
        title = "Plan refused: nothing was written"
    elif dry_run:
        title = "Plan (dry run: nothing was written)"
    else:
        title = "Changes carried out"
    outcome = [
        (label, int(summary[key]))
        for key, label in (
            ("applied", "applied"),
            ("unchanged", "already as planned"),
            ("changed_meanwhile", "changed since the listing (skipped)"),
            ("failed", "failed"),
        )
        if not dry_run and not was_refused and isinstance(summary.get(key), int)
    ]
    writes_first = plan.assign(_skip=[a == _ACTION_SKIP for a in actions]).sort_values(
        "_skip", kind="stable"
    )
    link = "plan.csv" if "plan.csv" in links else None
    return PlanView(
        title=title,
        dry_run=dry_run,
        writes=writes,
        skips=skips,
        by_action=by_action,
        sample=_sample(
            writes_first.drop(columns="_skip"),
            _PLAN_COLUMNS,
            options.sample_rows,
            options.show_personal_data,
        ),
        link=link,
        verdict=verdict,
        refused=refused,
        outcome=outcome,
    )


@dataclass(frozen=True)
class ChangesView:
    since_run: str | None
    since_when: str
    reason: str | None
    new: int
    resolved: int
    still_open: int
    new_sample: SampleTable | None
    resolved_sample: SampleTable | None


def _changes_view(changes: RunChanges | None, options: HtmlOptions) -> ChangesView | None:
    if changes is None:
        return None
    if not changes.compared or changes.new is None or changes.resolved is None:
        return ChangesView(None, "", changes.reason, 0, 0, 0, None, None)
    columns = (("kind", "Kind"), *_SAMPLE_COLUMNS)

    def sample(rows: pd.DataFrame) -> SampleTable | None:
        if len(rows) == 0:
            return None
        ordered = _order_by_severity(rows)
        return _sample(ordered, columns, options.sample_rows, options.show_personal_data)

    return ChangesView(
        since_run=changes.since_run,
        since_when=human_time(changes.since_started_at, options.timezone),
        reason=None,
        new=len(changes.new),
        resolved=len(changes.resolved),
        still_open=changes.still_open or 0,
        new_sample=sample(changes.new),
        resolved_sample=sample(changes.resolved),
    )


def _headline(summary: Mapping[str, Any], options: HtmlOptions) -> list[str]:
    parts = []
    if summary.get("mode"):
        parts.append(f"{summary['mode']} mode")
    if summary.get("started_at"):
        parts.append(human_time(summary["started_at"], options.timezone))
    if summary.get("duration_seconds") is not None:
        parts.append(f"took {_duration_text(summary['duration_seconds'])}")
    status = str(summary.get("status", ""))
    if status == "refused":
        parts.append("Refused: nothing was written")
    elif "dry_run" in summary:
        parts.append("Dry run: nothing was written" if summary["dry_run"] else "Changes applied")
    if status and status not in ("succeeded", "refused"):
        parts.append(f"status {status}")
    return parts


def render_summary_html(
    summary: Mapping[str, Any],
    findings: pd.DataFrame,
    *,
    changes: RunChanges | None = None,
    plan: pd.DataFrame | None = None,
    links: Collection[str] = (),
    options: HtmlOptions | None = None,
) -> str:
    """The page for one run. `findings` in the contract's columns; `links`, the names of
    the files written beside the page (only those are linked)."""
    options = options or HtmlOptions()
    requests = summary.get("requests_by_endpoint") or {}
    request_rows = sorted(
        ((str(endpoint), int(n)) for endpoint, n in dict(requests).items()),
        key=lambda row: (-row[1], row[0]),
    )
    sections = _kind_sections(findings, options)
    by_severity: Counter[str] = Counter()
    for section in sections:
        by_severity[section.severity] += section.count
    job = str(summary.get("job", "run"))
    return load_template().render(
        title=f"stripe-reconcile {job}",
        run_id=str(summary.get("run_id", "")),
        headline=_headline(summary, options),
        total_findings=len(findings),
        severity_counts=[
            (severity, by_severity[severity])
            for severity in (*SEVERITY_ORDER, "other")
            if by_severity.get(severity)
        ],
        colours=SEVERITY_COLOURS,
        sections=sections,
        plan=_plan_view(summary, plan, links, options),
        changes=_changes_view(changes, options),
        links=set(links),
        facts=_facts(summary, options.timezone),
        request_rows=request_rows,
        total_requests=sum(n for _, n in request_rows),
        timezone=options.timezone,
    )
