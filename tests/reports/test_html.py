"""summary.html as a person reads it: what to do first, samples, links, plans, changes, times."""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from reconcile.rules.findings import make_findings
from reports.changes import RunChanges
from reports.html import HtmlOptions, human_time, render_summary_html
from reports.tables import FINDING_COLUMNS
from reports.writer import write_run_reports

RUN_ID = "20261121T210501Z-3f9a1c"
STARTED = datetime(2026, 11, 21, 21, 5, 1, 123456, tzinfo=UTC)


def _summary(**extra: Any) -> dict[str, Any]:
    return {
        "status": "succeeded",
        "mode": "test",
        "started_at": STARTED.isoformat(),
        "finished_at": "2026-11-21T21:05:13.654321+00:00",
        "duration_seconds": 12.5,
        "snapshot_created_lt": 1795813501,
        "requests_by_endpoint": {"GET /v1/customers": 30},
        **extra,
    }


def _findings() -> pd.DataFrame:
    rows: list[dict[str, Any]] = [
        # Info is the most frequent, and must still come last.
        {
            "kind": "stale_metadata",
            "customer_id": f"cus_stale{i:03d}",
            "user_id": str(i),
            "email": f"user{i}@example.com",
            "field": "email" if i % 2 else "metadata.plan",
            "stripe_value": f"old{i}@example.com" if i % 2 else "pro",
            "local_value": f"user{i}@example.com" if i % 2 else "team",
            "detail": f"Field differs for user {i}.",
            "suggested_action": "run sync-metadata",
        }
        for i in range(25)
    ]
    rows += [
        {
            "kind": "orphan_customer",
            "customer_id": f"cus_orphan{i}",
            "email": f"orphan{i}@example.com",
            "detail": "No local user matches.",
            "suggested_action": "review manually",
        }
        for i in range(3)
    ]
    rows += [
        {
            "kind": "missing_customer",
            "customer_id": "cus_missing1",
            "user_id": "77",
            "detail": "User 77 points at a customer that was deleted.",
            "suggested_action": "clear the user's customer id, then run link-users",
        },
        {
            "kind": "missing_customer",
            "customer_id": "cus_missing2",
            "user_id": "78",
            "detail": "User 78 points at a customer that never existed.",
            "suggested_action": "review manually",
        },
    ]
    return make_findings(rows)


def _page(run_dir: Path) -> str:
    return (run_dir / "summary.html").read_text(encoding="utf-8")


def _section(page: str, anchor: str) -> str:
    """The part of the page from the heading with `id=anchor` to the next heading of its level."""
    start = page.index(f'id="{anchor}"')
    level = page[page.rindex("<h", 0, start) + 2]
    end = page.find(f"<h{level} ", start)
    return page[start : end if end != -1 else len(page)]


def _sample_rows(section: str) -> int:
    table = section[section.index('class="sample"') :].split("</table>", 1)[0]
    return table.count("<tr>") - 1  # the header row


def test_kinds_come_errors_first_each_with_action_count_sample_and_csv_link(
    tmp_path: Path,
) -> None:
    run_dir = write_run_reports(tmp_path, "reconcile", RUN_ID, _findings(), _summary())
    page = _page(run_dir)

    todo = page[page.index('<h2 id="todo">') : page.index('<h2 id="changes">')]
    order = re.findall(r'<h3 id="kind-([a-z_]+)"', todo)
    assert order == ["missing_customer", "orphan_customer", "stale_metadata"]
    overview = re.findall(r'<a href="#kind-([a-z_]+)"', todo)
    assert overview == order

    missing = _section(page, "kind-missing_customer")
    assert "missing_customer: 2" in missing
    # Two different suggested actions: both said, each with its count.
    assert "clear the user&#39;s customer id, then run link-users</strong> (1)" in missing
    assert "review manually</strong> (1)" in missing
    assert "cus_missing1" in missing
    assert ">77<" in missing
    assert _sample_rows(missing) == 2

    stale = _section(page, "kind-stale_metadata")
    assert "Suggested action: <strong>run sync-metadata</strong>" in stale
    assert _sample_rows(stale) == 20  # a sample, not all 25
    assert "and 5 more" in stale
    assert "cus_stale000" in stale
    assert "cus_stale020" not in stale

    for kind in order:
        link = f'<a href="findings-{kind}.csv">'
        assert link in _section(page, f"kind-{kind}")
        assert (run_dir / f"findings-{kind}.csv").is_file()  # the link leads somewhere
    # Every link on the page is relative and names a file of the run folder, or an anchor.
    for href in re.findall(r'href="([^"]+)"', page):
        assert href.startswith("#") or (run_dir / href).is_file(), href


def test_no_svg_no_script_no_external_asset_and_phone_friendly(tmp_path: Path) -> None:
    page = _page(write_run_reports(tmp_path, "reconcile", RUN_ID, _findings(), _summary()))

    assert "<svg" not in page.lower()
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert "http://" not in page
    assert "https://" not in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "max-width" in page
    # No fixed pixel widths that a phone would overflow: bars are percentages.
    assert not re.search(r'width="\d+"', page)
    assert not re.search(r"width:\s*\d{3,}px", page)
    # Each wide table sits in its own scrolling box.
    assert page.count('<table class="sample"') == page.count(
        '<div class="scroll" style="overflow-x:auto;max-width:100%;">\n<table class="sample"'
    )


def test_times_are_human_in_the_runs_time_zone(tmp_path: Path) -> None:
    run_dir = write_run_reports(
        tmp_path,
        "reconcile",
        RUN_ID,
        _findings(),
        _summary(),
        html=HtmlOptions(timezone="Europe/Berlin"),
    )
    page = _page(run_dir)

    headline = page[page.index('<p class="headline">') :].split("</p>", 1)[0]
    assert "Sat 21 Nov 2026, 22:05:01 CET" in headline
    assert "test mode" in headline
    # Neither ISO times with microseconds nor epoch seconds reach the reader.
    assert "2026-11-21T21:05" not in page
    assert ".123456" not in page
    assert "1795813501" not in page
    assert "1,795,813,501" not in page
    assert "Sat 21 Nov 2026, 22:05:13 CET" in page  # finished
    assert "Times in Europe/Berlin" in page


def test_human_time() -> None:
    assert human_time("2026-07-01T10:00:00+00:00", "America/New_York") == (
        "Wed 1 Jul 2026, 06:00:00 EDT"
    )
    assert human_time(1_790_000_000, "UTC") == "Mon 21 Sep 2026, 14:13:20 UTC"
    assert human_time("not a time") == "not a time"


def _plan(writes: int, skips: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "action": ["update_customer"] * writes + ["skip"] * skips,
            "customer_id": [f"cus_plan{i:03d}" for i in range(writes + skips)],
            "user_id": [str(i) for i in range(writes + skips)],
            "params": ['{"email": "secret@example.com"}'] * (writes + skips),
            "before": ["{}"] * (writes + skips),
            "reason": ["metadata.plan differs"] * writes + ["metadata would be too long"] * skips,
            "idempotency_key": [f"k{i}" for i in range(writes + skips)],
        }
    )


def test_a_dry_run_with_planned_changes_is_a_plan_never_no_findings(tmp_path: Path) -> None:
    summary = _summary(dry_run=True, planned_changes=30, max_changes=20, applied=0, failed=0)
    run_dir = write_run_reports(
        tmp_path,
        "sync-metadata",
        RUN_ID,
        pd.DataFrame(),
        summary,
        extra_tables={"plan": _plan(30, 3)},
    )
    page = _page(run_dir)

    assert "No findings" not in page
    assert 'class="none"' not in page
    assert "True" not in page
    assert "Dry run: nothing was written" in page  # the headline, in words
    plan = _section(page, "plan")
    assert "Plan (dry run: nothing was written)" in plan
    assert "30 changes planned" in page
    # Counts by action, skips last; a sample of the writes; the link; the verdict.
    assert re.search(r"update_customer</td><td class=\"n\">30<", plan)
    assert re.search(
        r"skip <span[^>]*>\(not safe or not possible[^<]*</span></td>"
        r"<td class=\"n\">3<",
        plan,
    )
    assert _sample_rows(plan) == 20
    assert "cus_plan000" in plan
    assert '<a href="plan.csv">' in plan
    verdict = re.sub(r"<[^>]+>", "", plan[plan.index('class="verdict"') :].split("</p>")[0])
    assert "--apply would refuse this plan: 30 changes, more than --max-changes 20" in verdict
    assert "--apply --max-changes 30" in verdict
    assert "secret@example.com" not in page  # the plan's parameters stay in plan.csv
    facts = _section(page, "run")
    assert re.search(r">Dry run</th><td[^>]*>yes<", facts)


def test_a_plan_within_max_changes_says_apply_would_carry_it_out(tmp_path: Path) -> None:
    summary = _summary(dry_run=True, planned_changes=3, max_changes=100)
    run_dir = write_run_reports(
        tmp_path, "dedupe", RUN_ID, pd.DataFrame(), summary, extra_tables={"plan": _plan(3)}
    )
    verdict = _page(run_dir).split('class="verdict"', 1)[1].split("</p>", 1)[0]
    assert "would carry out these 3 changes (within " in re.sub(r"<[^>]+>", "", verdict)


def test_a_plan_of_nothing_and_no_findings_is_green(tmp_path: Path) -> None:
    summary = _summary(dry_run=True, planned_changes=0, max_changes=100)
    run_dir = write_run_reports(
        tmp_path, "dedupe", RUN_ID, pd.DataFrame(), summary, extra_tables={"plan": _plan(0)}
    )
    page = _page(run_dir)
    assert "Nothing to change." in page
    assert "No findings: nothing to do." in page


def test_personal_data_is_withheld_when_the_configuration_says_so(tmp_path: Path) -> None:
    run_dir = write_run_reports(
        tmp_path,
        "reconcile",
        RUN_ID,
        _findings(),
        _summary(),
        html=HtmlOptions(show_personal_data=False),
    )
    page = _page(run_dir)

    assert "@example.com" not in page
    assert ">Email<" not in page
    assert "(withheld)" in page  # the values of the email field
    assert ">pro<" in page  # other fields' values stay
    assert "cus_stale001" in page  # the ids stay: they are what a person acts on
    # The CSVs, for people with access to the run folder, keep everything.
    assert "user1@example.com" in (run_dir / "findings-stale_metadata.csv").read_text()


def test_changes_write_new_and_resolved_csv_and_a_section(tmp_path: Path) -> None:
    previous = make_findings(
        [
            {"kind": "orphan_customer", "customer_id": "cus_fixed", "detail": "=1+1"},
            {"kind": "orphan_customer", "customer_id": "cus_orphan0"},
        ]
    )
    current = _findings()
    from reconcile.rules.changes import diff_findings

    diff = diff_findings(previous, current)
    changes = RunChanges(
        since_run="20261120T210501Z-aaaaaa",
        since_started_at=datetime(2026, 11, 20, 21, 5, 1, tzinfo=UTC),
        new=diff.new,
        resolved=diff.resolved,
        still_open=diff.still_open,
    )
    run_dir = write_run_reports(tmp_path, "reconcile", RUN_ID, current, _summary(), changes=changes)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["changes"] == {
        "since_run": "20261120T210501Z-aaaaaa",
        "new": len(current) - 1,
        "resolved": 1,
        "still_open": 1,
        "reason": None,
    }
    for name, expected in (("new", len(current) - 1), ("resolved", 1)):
        with (run_dir / f"{name}.csv").open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
        assert reader.fieldnames == list(FINDING_COLUMNS)
        assert len(rows) == expected
    resolved_text = (run_dir / "resolved.csv").read_text()
    assert "cus_fixed" in resolved_text
    assert "'=1+1" in resolved_text  # through the one CSV writer: formulas neutralised

    page = _page(run_dir)
    total = page[page.index('<p class="total">') :].split("</p>", 1)[0]
    assert "since the last run: <strong>29 new</strong>, 1 resolved, 1 still open" in total
    section = _section(page, "changes")
    assert "Compared with run 20261120T210501Z-aaaaaa (Fri 20 Nov 2026, 21:05:01 UTC)" in section
    assert '<a href="new.csv">' in section
    assert '<a href="resolved.csv">' in section
    assert "cus_fixed" in section
    # New findings are listed errors first.
    assert (
        section.index("cus_missing1") < section.index("cus_orphan1") < section.index("cus_stale000")
    )


def test_a_first_run_says_so_and_writes_no_change_files(tmp_path: Path) -> None:
    changes = RunChanges(None, None, None, None, None, "first completed reconcile run in test mode")
    run_dir = write_run_reports(
        tmp_path, "reconcile", RUN_ID, _findings(), _summary(), changes=changes
    )
    assert not (run_dir / "new.csv").exists()
    assert not (run_dir / "resolved.csv").exists()
    assert "No comparison: first completed reconcile run in test mode." in _page(run_dir)
    assert json.loads((run_dir / "summary.json").read_text())["changes"]["since_run"] is None


@pytest.mark.parametrize("name", ["new", "resolved"])
def test_new_and_resolved_are_reserved_table_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="extra table name"):
        write_run_reports(
            tmp_path, "reconcile", RUN_ID, _findings(), _summary(), extra_tables={name: _plan(1)}
        )


def test_render_escapes_finding_values() -> None:
    hostile = make_findings(
        [{"kind": "orphan_customer", "customer_id": "cus_x", "detail": "<img src=x onerror=1>"}]
    )
    page = render_summary_html(_summary(), hostile)
    assert "<img" not in page
    assert "&lt;img src=x onerror=1&gt;" in page


def test_html_options_come_from_the_configuration(tmp_path: Path) -> None:
    from reconcile.settings import load_settings
    from reports.html import html_options

    config = tmp_path / "config.toml"
    config.write_text(
        '[email]\ninclude_personal_data = false\n[schedule]\ntimezone = "Europe/Berlin"\n'
    )
    options = html_options(load_settings(config, env={}))
    assert options == HtmlOptions(timezone="Europe/Berlin", show_personal_data=False)
    assert html_options(load_settings(None, env={})) == HtmlOptions()


def test_a_refused_apply_shows_its_plan_and_why(tmp_path: Path) -> None:
    reason = "the plan has 30 changes, more than --max-changes 20: nothing was written"
    summary = _summary(
        status="refused",
        dry_run=False,
        planned_changes=30,
        max_changes=20,
        applied=0,
        refused=reason,
    )
    run_dir = write_run_reports(
        tmp_path, "dedupe", RUN_ID, pd.DataFrame(), summary, extra_tables={"plan": _plan(30)}
    )
    page = _page(run_dir)
    plan = _section(page, "plan")
    assert "Plan refused: nothing was written" in plan
    assert reason in plan
    assert "Changes carried out" not in page
    assert "applied" not in plan
    assert "Refused: nothing was written" in page.split("</p>", 1)[0]
    assert _sample_rows(plan) == 20
