from __future__ import annotations

import csv
import errno
import json
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reconcile.errors import ConfigError, ReconcileError
from reports import tables
from reports.errors import ReportWriteError
from reports.tables import FINDING_COLUMNS
from reports.writer import new_run_id, write_run_reports

RUN_ID = "20261121T210501Z-3f9a1c"


def _finding(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(FINDING_COLUMNS)
    row.update(values)
    return row


@pytest.fixture
def findings() -> pd.DataFrame:
    rows = [
        _finding(
            kind="orphan_customer",
            severity="warning",
            customer_id="cus_A",
            email="a@example.com",
            detail="no local user matches",
            suggested_action="link or delete",
        ),
        _finding(
            kind="stale_metadata",
            severity="info",
            customer_id="cus_B",
            user_id=42.0,  # an int column with gaps arrives as float
            field="plan",
            stripe_value="pro",
            local_value=float("nan"),
            related_ids=["cus_C", "cus_D"],
        ),
        _finding(
            kind="orphan_customer",
            severity="warning",
            customer_id="cus_E",
            user_id=pd.NA,
        ),
    ]
    # Columns in a different order, plus one outside the contract.
    frame = pd.DataFrame(rows)[list(reversed(FINDING_COLUMNS))]
    frame["internal_score"] = 0.5
    return frame


def _summary() -> dict[str, Any]:
    return {
        "mode": "test",
        "started_at": datetime(2026, 11, 21, 21, 5, 1, tzinfo=UTC),
        "duration_seconds": 12.5,
        "customers_scanned": 3000,
        "users_scanned": 2990,
        "requests_by_endpoint": {"GET /v1/customers": 30, "GET /v1/customers/:id": 2},
    }


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def test_findings_csv_has_exactly_the_contract_columns_in_order_and_empty_absent_values(
    tmp_path: Path, findings: pd.DataFrame
) -> None:
    run_dir = write_run_reports(tmp_path, "reconcile", RUN_ID, findings, _summary())

    assert run_dir == tmp_path / "reconcile" / RUN_ID
    columns, rows = _read_csv(run_dir / "findings.csv")
    assert columns == list(FINDING_COLUMNS)
    assert len(rows) == 3
    stale = next(row for row in rows if row["kind"] == "stale_metadata")
    assert stale["user_id"] == "42"
    assert stale["local_value"] == ""
    assert stale["related_ids"] == "cus_C;cus_D"
    assert rows[0]["field"] == ""
    assert rows[2]["user_id"] == ""
    text = (run_dir / "findings.csv").read_text(encoding="utf-8")
    for absent in ("None", "nan", "NaN", "<NA>"):
        assert absent not in text


def test_findings_parquet_is_all_strings_with_the_contract_columns(
    tmp_path: Path, findings: pd.DataFrame
) -> None:
    run_dir = write_run_reports(tmp_path, "reconcile", RUN_ID, findings, _summary())

    table = pq.read_table(run_dir / "findings.parquet")
    assert table.column_names == list(FINDING_COLUMNS)
    assert all(field.type == pa.string() for field in table.schema)
    rows = table.to_pylist()
    assert [row["customer_id"] for row in rows] == ["cus_A", "cus_B", "cus_E"]
    assert rows[1]["user_id"] == "42"
    assert rows[1]["local_value"] == ""
    assert rows[2]["user_id"] == ""
    # The CSV and the Parquet file say the same thing.
    _, csv_rows = _read_csv(run_dir / "findings.csv")
    assert csv_rows == rows


def test_one_csv_per_kind_present_and_no_other(tmp_path: Path, findings: pd.DataFrame) -> None:
    run_dir = write_run_reports(tmp_path, "reconcile", RUN_ID, findings, _summary())

    per_kind = sorted(p.name for p in run_dir.glob("findings-*.csv"))
    assert per_kind == ["findings-orphan_customer.csv", "findings-stale_metadata.csv"]
    columns, orphans = _read_csv(run_dir / "findings-orphan_customer.csv")
    assert columns == list(FINDING_COLUMNS)
    assert [row["customer_id"] for row in orphans] == ["cus_A", "cus_E"]


def test_formats_choose_the_findings_files(tmp_path: Path, findings: pd.DataFrame) -> None:
    run_dir = write_run_reports(
        tmp_path, "reconcile", RUN_ID, findings, _summary(), formats=["parquet"]
    )

    names = {p.name for p in run_dir.iterdir()}
    assert "findings.parquet" in names
    assert "findings.csv" not in names
    assert "findings-orphan_customer.csv" in names  # per-kind CSVs are for people, always


def test_unknown_format_is_a_config_error_naming_the_setting(
    tmp_path: Path, findings: pd.DataFrame
) -> None:
    with pytest.raises(ConfigError, match=r"\[reports\] formats"):
        write_run_reports(tmp_path, "reconcile", RUN_ID, findings, _summary(), formats=["xlsx"])
    assert not (tmp_path / "reconcile").exists()


def test_summary_json_keeps_the_summary_and_adds_counts(
    tmp_path: Path, findings: pd.DataFrame
) -> None:
    run_dir = write_run_reports(tmp_path, "reconcile", RUN_ID, findings, _summary())

    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["job"] == "reconcile"
    assert summary["run_id"] == RUN_ID
    assert summary["mode"] == "test"
    assert summary["started_at"] == "2026-11-21T21:05:01+00:00"
    assert summary["customers_scanned"] == 3000
    assert summary["requests_by_endpoint"] == {"GET /v1/customers": 30, "GET /v1/customers/:id": 2}
    assert summary["counts_by_kind"] == {"orphan_customer": 2, "stale_metadata": 1}
    assert summary["counts_by_severity"] == {"info": 1, "warning": 2}


def test_summary_json_keeps_given_counts(tmp_path: Path, findings: pd.DataFrame) -> None:
    given = {**_summary(), "counts_by_kind": {"orphan_customer": 2, "stale_metadata": 1}}
    run_dir = write_run_reports(tmp_path, "reconcile", RUN_ID, findings, given)

    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert list(summary["counts_by_kind"]) == ["orphan_customer", "stale_metadata"]


def test_summary_html_shows_facts_counts_chart_and_requests(
    tmp_path: Path, findings: pd.DataFrame
) -> None:
    run_dir = write_run_reports(tmp_path, "reconcile", RUN_ID, findings, _summary())

    page = (run_dir / "summary.html").read_text(encoding="utf-8")
    assert RUN_ID in page
    assert "3,000" in page  # customers scanned
    assert "12.5 s" in page
    # The chart is table cells with inline colours, one bar per kind: no SVG (mail drops it).
    assert "<svg" not in page
    assert page.count('class="bar"') == 2
    assert "orphan_customer" in page
    assert '<td class="n">2</td>' in page
    assert "GET /v1/customers/:id" in page
    # The first line a person reads: the total and the split by severity, before the facts.
    total = page[page.index('<p class="total">') :].split("</p>", 1)[0]
    assert "3 findings" in total
    assert "warning</span> 2" in total
    assert "info</span> 1" in total
    assert page.index("What to do") < page.index('<h2 id="run">Run</h2>')
    assert "<script" not in page
    assert "http://" not in page
    assert "https://" not in page


def test_summary_html_escapes_values(tmp_path: Path) -> None:
    hostile = pd.DataFrame([_finding(kind="orphan_customer", severity="warning")])
    summary = {**_summary(), "mode": "<script>alert(1)</script>"}
    run_dir = write_run_reports(tmp_path, "reconcile", RUN_ID, hostile, summary)

    page = (run_dir / "summary.html").read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_no_findings_still_writes_headers_and_a_summary(tmp_path: Path) -> None:
    run_dir = write_run_reports(tmp_path, "reconcile", RUN_ID, pd.DataFrame(), _summary())

    columns, rows = _read_csv(run_dir / "findings.csv")
    assert columns == list(FINDING_COLUMNS)
    assert rows == []
    assert pq.read_table(run_dir / "findings.parquet").column_names == list(FINDING_COLUMNS)
    assert not list(run_dir.glob("findings-*.csv"))
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["counts_by_kind"] == {}
    assert "No findings" in (run_dir / "summary.html").read_text(encoding="utf-8")


def test_findings_missing_a_contract_column_are_refused_before_writing(tmp_path: Path) -> None:
    broken = pd.DataFrame([{"kind": "orphan_customer", "severity": "warning"}])

    with pytest.raises(ValueError, match="customer_id"):
        write_run_reports(tmp_path, "reconcile", RUN_ID, broken, _summary())
    assert not (tmp_path / "reconcile").exists()


def test_extra_tables_are_written_in_each_format(tmp_path: Path, findings: pd.DataFrame) -> None:
    plan = pd.DataFrame({"action": ["delete", "update"], "customer_id": ["cus_A", "cus_B"]})
    audit = pd.DataFrame({"n": [1, 2]})
    run_dir = write_run_reports(
        tmp_path,
        "dedupe",
        RUN_ID,
        findings,
        _summary(),
        extra_tables={"plan": plan, "audit": audit},
    )

    _, plan_rows = _read_csv(run_dir / "plan.csv")
    assert plan_rows == [
        {"action": "delete", "customer_id": "cus_A"},
        {"action": "update", "customer_id": "cus_B"},
    ]
    assert pq.read_table(run_dir / "audit.parquet").column("n").to_pylist() == [1, 2]


@pytest.mark.parametrize("name", ["findings", "summary", "findings-x", "../evil", "Plan"])
def test_extra_table_names_that_would_clash_or_escape_are_refused(
    tmp_path: Path, findings: pd.DataFrame, name: str
) -> None:
    with pytest.raises(ValueError, match="extra table name"):
        write_run_reports(
            tmp_path, "reconcile", RUN_ID, findings, _summary(), extra_tables={name: findings}
        )
    assert not (tmp_path / "reconcile").exists()


def test_files_get_the_file_mode_whatever_the_umask(
    tmp_path: Path, findings: pd.DataFrame
) -> None:
    old_umask = os.umask(0)
    try:
        run_dir = write_run_reports(tmp_path, "reconcile", RUN_ID, findings, _summary())
    finally:
        os.umask(old_umask)

    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run_dir.iterdir()}
    assert len(modes) == 6
    assert set(modes.values()) == {0o600}
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700


def test_a_wider_file_mode_is_honoured_despite_a_narrow_umask(
    tmp_path: Path, findings: pd.DataFrame
) -> None:
    old_umask = os.umask(0o077)
    try:
        run_dir = write_run_reports(
            tmp_path, "reconcile", RUN_ID, findings, _summary(), file_mode=0o640
        )
    finally:
        os.umask(old_umask)

    assert stat.S_IMODE((run_dir / "findings.csv").stat().st_mode) == 0o640
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o750


def test_success_leaves_only_the_final_folder(tmp_path: Path, findings: pd.DataFrame) -> None:
    write_run_reports(tmp_path, "reconcile", RUN_ID, findings, _summary())

    assert [p.name for p in (tmp_path / "reconcile").iterdir()] == [RUN_ID]


def test_disk_full_mid_write_leaves_nothing_and_says_so(
    tmp_path: Path, findings: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "reconcile" / RUN_ID
    seen_while_writing: list[list[str]] = []

    def write_csv_then_fill_the_disk(table: pd.DataFrame, handle: Any) -> None:
        if seen_while_writing:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        tables.write_csv(table, handle)
        seen_while_writing.append(sorted(p.name for p in final.parent.iterdir()))

    monkeypatch.setattr("reports.writer.write_csv", write_csv_then_fill_the_disk)

    with pytest.raises(ReportWriteError) as caught:
        write_run_reports(tmp_path, "reconcile", RUN_ID, findings, _summary())

    # While the folder was being filled, readers saw only a hidden temporary name.
    assert seen_while_writing == [[f".{RUN_ID}.tmp-{os.getpid()}"]]
    message = caught.value.message
    assert "\n" not in message
    assert str(tmp_path / "reconcile" / RUN_ID) in message
    assert "disk is full" in message
    assert isinstance(caught.value, ReconcileError)
    assert caught.value.exit_code == 2
    assert list((tmp_path / "reconcile").iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_output_folder_is_a_report_write_error(
    tmp_path: Path, findings: pd.DataFrame
) -> None:
    job_dir = tmp_path / "reconcile"
    job_dir.mkdir()
    job_dir.chmod(0o500)
    try:
        with pytest.raises(ReportWriteError, match="permission denied"):
            write_run_reports(tmp_path, "reconcile", RUN_ID, findings, _summary())
        assert list(job_dir.iterdir()) == []
    finally:
        job_dir.chmod(0o700)


def test_output_path_that_is_a_file_is_a_report_write_error(
    tmp_path: Path, findings: pd.DataFrame
) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")

    with pytest.raises(ReportWriteError, match="could not write the report folder"):
        write_run_reports(blocker, "reconcile", RUN_ID, findings, _summary())
    assert blocker.read_text() == "not a folder"


def test_an_existing_run_folder_is_never_overwritten(
    tmp_path: Path, findings: pd.DataFrame
) -> None:
    first = write_run_reports(tmp_path, "reconcile", RUN_ID, findings, _summary())
    before = (first / "findings.csv").read_bytes()

    with pytest.raises(ReportWriteError, match=r"it already exists.*new run id"):
        write_run_reports(tmp_path, "reconcile", RUN_ID, findings.iloc[:1], _summary())

    assert (first / "findings.csv").read_bytes() == before
    assert [p.name for p in (tmp_path / "reconcile").iterdir()] == [RUN_ID]


def test_new_run_id_is_sortable_safe_and_unique() -> None:
    now = datetime(2026, 11, 21, 22, 5, 1, tzinfo=timezone(timedelta(hours=1)))

    run_id = new_run_id(now)
    later = new_run_id(now + timedelta(seconds=1))

    assert run_id.startswith("20261121T210501Z-")
    assert len(run_id) == len("20261121T210501Z-3f9a1c")
    assert run_id.replace("-", "").isalnum()
    assert later > run_id
    assert len({new_run_id(now) for _ in range(200)}) == 200


def test_new_run_id_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        new_run_id(datetime(2026, 11, 21, 21, 5, 1))
