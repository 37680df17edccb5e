"""A finding's identity, the diff of two runs' findings, and finding the run to compare with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from reconcile.rules.changes import diff_findings, finding_identities, finding_identity
from reconcile.rules.findings import make_findings
from reconcile.state.store import RunStatus, StateStore
from reports.changes import (
    FindingsUnavailable,
    changes_since_last_run,
    previous_completed_run,
    read_run_findings,
)
from reports.tables import FINDING_COLUMNS
from reports.writer import write_run_reports

T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def _row(kind: str, customer_id: str = "", **values: str) -> dict[str, Any]:
    return {"kind": kind, "customer_id": customer_id, **values}


# Identity ----------------------------------------------------------------------------


def test_identity_is_kind_ids_related_set_and_field() -> None:
    assert finding_identity("duplicate_email", "cus_A", "", "cus_C;cus_B", "") == (
        "duplicate_email",
        "cus_A",
        "",
        "cus_B;cus_C",
        "",
    )
    # The related ids are a set: order, repeats, blanks and spaces do not matter.
    assert finding_identity("k", "c", "u", "b; a;;a", "f") == finding_identity(
        "k", "c", "u", "a;b", "f"
    )
    # Absent values read empty, whatever form absence takes.
    assert finding_identity("k", None, float("nan"), pd.NA, None) == ("k", "", "", "", "")


def test_identity_ignores_values_detail_action_and_email() -> None:
    before = make_findings(
        [
            _row(
                "stale_metadata",
                "cus_A",
                user_id="7",
                email="old@example.com",
                field="metadata.plan",
                stripe_value="pro",
                local_value="team",
                detail="one text",
                suggested_action="run sync-metadata",
            )
        ]
    )
    after = before.assign(
        email="new@example.com", local_value="max", detail="another", suggested_action="x"
    )
    assert finding_identities(before) == finding_identities(after)


def test_identity_tells_fields_users_and_kinds_apart() -> None:
    findings = make_findings(
        [
            _row("stale_metadata", "cus_A", user_id="7", field="email"),
            _row("stale_metadata", "cus_A", user_id="7", field="name"),
            _row("stale_metadata", "cus_A", user_id="8", field="name"),
            _row("orphan_customer", "cus_A"),
            _row("duplicate_email", "cus_A", related_ids="cus_B"),
            _row("duplicate_email", "cus_A", related_ids="cus_B;cus_C"),
        ]
    )
    assert len(set(finding_identities(findings))) == len(findings)


# Diff ----------------------------------------------------------------------------------


def test_diff_counts_new_resolved_and_still_open_rows() -> None:
    previous = make_findings(
        [
            _row("orphan_customer", "cus_fixed"),
            _row("orphan_customer", "cus_stays"),
            _row("duplicate_email", "cus_A", related_ids="cus_C;cus_B"),
            _row("stale_metadata", "cus_D", user_id="4", field="metadata.plan", local_value="a"),
        ]
    )
    current = make_findings(
        [
            _row("orphan_customer", "cus_stays"),
            _row("duplicate_email", "cus_A", related_ids="cus_B;cus_C"),  # reordered: same
            _row("stale_metadata", "cus_D", user_id="4", field="metadata.plan", local_value="b"),
            _row("missing_customer", "cus_gone", user_id="9"),
        ]
    )
    changes = diff_findings(previous, current)

    assert changes.counts() == {"new": 1, "resolved": 1, "still_open": 3}
    assert changes.new["customer_id"].tolist() == ["cus_gone"]
    assert changes.resolved["customer_id"].tolist() == ["cus_fixed"]
    # Rows keep every column of their run: resolved rows are the previous run's.
    assert list(changes.new.columns) == list(FINDING_COLUMNS)
    assert list(changes.resolved.columns) == list(FINDING_COLUMNS)


def test_diff_against_nothing_and_of_nothing() -> None:
    findings = make_findings([_row("orphan_customer", "cus_A"), _row("orphan_customer", "cus_B")])
    first = diff_findings(pd.DataFrame(), findings)
    assert first.counts() == {"new": 2, "resolved": 0, "still_open": 0}
    gone = diff_findings(findings, pd.DataFrame())
    assert gone.counts() == {"new": 0, "resolved": 2, "still_open": 0}
    assert diff_findings(findings, findings).counts() == {"new": 0, "resolved": 0, "still_open": 2}


# Finding the previous run ------------------------------------------------------------


@pytest.fixture
def state(sqlite_url: str) -> Any:
    store = StateStore(sqlite_url)
    yield store
    store.close()


def _record_run(
    state: StateStore,
    out: Path,
    run_id: str,
    findings: pd.DataFrame,
    *,
    started: datetime,
    status: RunStatus = RunStatus.SUCCEEDED,
    mode: str = "test",
    job: str = "reconcile",
    formats: tuple[str, ...] = ("csv", "parquet"),
) -> Path:
    state.start_run(run_id, job, started_at=started, mode=mode)
    folder = write_run_reports(out, job, run_id, findings, {"mode": mode}, formats=formats)
    state.finish_run(
        run_id, status, finished_at=started + timedelta(seconds=5), report_dir=str(folder)
    )
    return folder


def test_the_last_completed_run_of_the_same_job_and_mode_is_compared(
    state: StateStore, tmp_path: Path
) -> None:
    old = make_findings([_row("orphan_customer", "cus_A"), _row("orphan_customer", "cus_B")])
    _record_run(state, tmp_path, "r1", old, started=T0)
    # Not these: a failed run, a live-mode run and another job's run, all later.
    _record_run(
        state,
        tmp_path,
        "r2",
        old.iloc[:0],
        started=T0 + timedelta(hours=1),
        status=RunStatus.FAILED,
    )
    _record_run(state, tmp_path, "r3", old.iloc[:0], started=T0 + timedelta(hours=2), mode="live")
    _record_run(state, tmp_path, "r4", old.iloc[:0], started=T0 + timedelta(hours=3), job="dedupe")
    state.start_run("r5", "reconcile", started_at=T0 + timedelta(hours=4), mode="test")

    current = make_findings([_row("orphan_customer", "cus_B"), _row("orphan_customer", "cus_C")])
    changes = changes_since_last_run(state, "reconcile", "test", "r5", current)

    assert changes.since_run == "r1"
    assert changes.counts() == {
        "since_run": "r1",
        "new": 1,
        "resolved": 1,
        "still_open": 1,
        "reason": None,
    }
    assert changes.resolved is not None
    assert changes.resolved["customer_id"].tolist() == ["cus_A"]


def test_a_partial_run_counts_as_completed(state: StateStore, tmp_path: Path) -> None:
    _record_run(
        state,
        tmp_path,
        "r1",
        make_findings([_row("orphan_customer", "cus_A")]),
        started=T0,
        status=RunStatus.PARTIAL,
    )
    state.start_run("r2", "reconcile", started_at=T0 + timedelta(hours=1), mode="test")
    assert previous_completed_run(state, "reconcile", "test", before="r2") is not None


def test_first_run_has_no_comparison_and_says_why(state: StateStore) -> None:
    state.start_run("r1", "reconcile", started_at=T0, mode="test")
    changes = changes_since_last_run(state, "reconcile", "test", "r1", pd.DataFrame())
    assert changes.counts() == {
        "since_run": None,
        "new": None,
        "resolved": None,
        "still_open": None,
        "reason": "first completed reconcile run in test mode",
    }


def test_a_removed_report_folder_means_no_comparison_not_a_failed_run(
    state: StateStore, tmp_path: Path
) -> None:
    folder = _record_run(
        state, tmp_path, "r1", make_findings([_row("orphan_customer", "c")]), started=T0
    )
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    state.start_run("r2", "reconcile", started_at=T0 + timedelta(hours=1), mode="test")

    changes = changes_since_last_run(state, "reconcile", "test", "r2", pd.DataFrame())

    assert changes.since_run is None
    assert changes.reason is not None
    assert "r1" in changes.reason
    assert "no longer in" in changes.reason


def test_findings_are_read_back_from_csv_when_there_is_no_parquet(
    state: StateStore, tmp_path: Path
) -> None:
    # A value that looks like a formula is written to the CSV as text ('=...); read back,
    # it must be the value again, or the finding would look new every day.
    findings = make_findings(
        [_row("stale_metadata", "cus_A", user_id="-5", field="name", local_value="=HYPERLINK(1)")]
    )
    _record_run(state, tmp_path, "r1", findings, started=T0, formats=("csv",))
    record = state.get_run("r1")
    assert record is not None

    back = read_run_findings(record)

    assert back["user_id"].tolist() == ["-5"]
    assert back["local_value"].tolist() == ["=HYPERLINK(1)"]
    assert diff_findings(back, findings).counts() == {"new": 0, "resolved": 0, "still_open": 1}


def test_a_run_without_report_folder_is_unavailable(state: StateStore) -> None:
    state.start_run("r1", "reconcile", started_at=T0, mode="test")
    state.finish_run("r1", RunStatus.SUCCEEDED, finished_at=T0)
    record = state.get_run("r1")
    assert record is not None
    with pytest.raises(FindingsUnavailable, match="no report folder"):
        read_run_findings(record)
