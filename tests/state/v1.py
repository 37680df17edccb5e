"""State databases as stripe-reconcile 0.1.0 left them, and what they hold.

`fixtures/state-v1.sqlite` was written by that version's code (`fixtures/make_state_v1.py`
says how); on PostgreSQL the same database is made from that code's DDL
(`fixtures/state-v1-postgresql.sql`) and the SQLite fixture's rows, or, where a checkout of
that version is at hand, by running the script itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from reconcile.listing.checkpoints import CheckpointStore
from reconcile.state.audit import AuditLog, Outcome
from reconcile.state.history import RunStats, load_stats, resumed_from
from reconcile.state.listings import other_listings
from reconcile.state.read_budget import last_customer_count, reads_by_job
from reconcile.state.reminders_sent import ReminderMemory
from reconcile.state.schema import V1_COLUMNS
from reconcile.state.store import RunStatus, StateStore
from reconcile.state.tables import metadata

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SQLITE_FIXTURE = FIXTURES / "state-v1.sqlite"
POSTGRESQL_DDL = FIXTURES / "state-v1-postgresql.sql"
SCRIPT = FIXTURES / "make_state_v1.py"
# A checkout of commit 0b1128b (the last 0.1.0 layout), for running its code.
V1_CHECKOUT = Path(os.environ.get("STRIPE_RECONCILE_V1_CHECKOUT", "/tmp/before"))

# What make_state_v1.py wrote.
T0 = datetime(2026, 11, 20, 3, 0, 0, tzinfo=UTC)
RUN_OK = "20261120T030000Z-aaaaaa"
RUN_PARTIAL = "20261121T030000Z-bbbbbb"
RUN_KILLED = "20261122T030000Z-cccccc"
LOCK_OWNER = f"worker-1:4242:{RUN_KILLED}"
WORK_DIR = "/var/lib/stripe-reconcile/work/" + RUN_KILLED


def sqlite_v1(folder: Path) -> str:
    """A copy of the SQLite fixture (the tests upgrade it), as a URL."""
    path = folder / "state-v1.sqlite"
    shutil.copyfile(SQLITE_FIXTURE, path)
    path.chmod(0o600)
    return f"sqlite:///{path}"


def postgresql_v1_from_ddl(url: str, sqlite_copy_folder: Path) -> None:
    """0.1.0's PostgreSQL tables (its own DDL) holding the SQLite fixture's rows."""
    source = sa.create_engine(sqlite_v1(sqlite_copy_folder))
    target = sa.create_engine(url)
    try:
        with target.begin() as conn:
            for statement in POSTGRESQL_DDL.read_text().split(";\n"):
                if statement.strip():
                    conn.exec_driver_sql(statement)
        with source.connect() as read, target.begin() as write:
            # Today's tables hold every column 0.1.0 had: read and write those through them.
            for name, names in V1_COLUMNS.items():
                table = metadata.tables[name]
                columns = [table.c[column] for column in sorted(names)]
                rows = [dict(row) for row in read.execute(sa.select(*columns)).mappings()]
                if rows:
                    write.execute(table.insert(), rows)
            # As 0.1.0's own inserts would have left it: the next audit id follows the last.
            write.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('stripe_reconcile_audit', 'id'), "
                "(SELECT max(id) FROM stripe_reconcile_audit))"
            )
    finally:
        source.dispose()
        target.dispose()


def v1_code_or_skip() -> Path:
    if not (V1_CHECKOUT / "jobs" / "state.py").is_file():
        pytest.skip(
            f"no checkout of 0.1.0 (commit 0b1128b) at {V1_CHECKOUT}: "
            "set STRIPE_RECONCILE_V1_CHECKOUT to run its code"
        )
    return V1_CHECKOUT


def write_with_v1_code(url: str) -> None:
    """Run make_state_v1.py on 0.1.0's code against `url`."""
    checkout = v1_code_or_skip()
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def assert_v1_rows_read_back(state: StateStore) -> None:
    """Every row make_state_v1.py wrote, read through today's API."""
    engine = state.engine
    assert [r.run_id for r in state.list_runs()] == [RUN_KILLED, RUN_PARTIAL, RUN_OK]
    ok = state.get_run(RUN_OK)
    assert ok is not None
    assert ok.status is RunStatus.SUCCEEDED
    assert ok.started_at == T0
    assert ok.finished_at == T0 + timedelta(seconds=42)
    assert ok.counts == {"orphan_customer": 3, "stale_metadata": 5}
    assert ok.requests == {"GET /v1/customers": 12, "GET /v1/customers/{id}": 2}
    assert ok.report_dir == "output/reconcile/" + RUN_OK
    partial = state.get_run(RUN_PARTIAL)
    assert partial is not None
    assert partial.status is RunStatus.PARTIAL
    killed = state.get_run(RUN_KILLED)
    assert killed is not None
    assert killed.status is RunStatus.RUNNING

    holder = state.lock_holder("reconcile")
    assert holder is not None
    assert holder.owner == LOCK_OWNER
    assert holder.acquired_at == T0 + timedelta(days=2)
    assert holder.expires_at == T0 + timedelta(days=2, seconds=45)

    audit = AuditLog(engine).entries(run_id=RUN_PARTIAL)
    assert [(e.customer_id, e.outcome) for e in audit] == [
        ("cus_A1", Outcome.APPLIED),
        ("cus_B2", Outcome.FAILED),
        ("cus_C3", Outcome.STARTED),
    ]
    assert audit[0].before == '{"plan": "free"}'
    assert audit[0].after == '{"plan": "pro"}'
    assert audit[0].stripe_request_id == "req_1"
    assert audit[0].time == T0 + timedelta(days=1)
    assert audit[1].error == "card_declined"

    test_history = ReminderMemory(engine, "test").history(["pm_1", "pm_2", "pm_9"])
    assert sorted(
        zip(test_history["payment_method_id"], test_history["times_sent"], strict=True)
    ) == [("pm_1", 2), ("pm_2", 1)]
    first = test_history[test_history["payment_method_id"] == "pm_1"].iloc[0]
    assert first["last_sent_at"] == T0 + timedelta(days=1)
    live = ReminderMemory(engine, "live").history(["pm_9"])
    assert list(live["payment_method_id"]) == ["pm_9"]

    checkpoints = CheckpointStore(engine)
    listing = checkpoints.listing_of(RUN_KILLED)
    assert listing is not None
    assert (listing.job, listing.listing_id, listing.created_lt, listing.work_dir) == (
        "reconcile",
        RUN_KILLED,
        1763780400,
        WORK_DIR,
    )
    windows = checkpoints.windows(RUN_KILLED)
    assert [(w.window, w.created_gte, w.created_lt) for w in windows] == [
        (0, None, 1700000000),
        (1, 1700000000, 1763780400),
    ]
    assert [(w.last_id, w.pages, w.rows, w.done) for w in windows] == [
        ("cus_0100", 1, 100, True),
        ("cus_0250", 2, 150, False),
    ]
    assert other_listings(engine, "reconcile", keep="none") == [(RUN_KILLED, WORK_DIR)]
    assert resumed_from(state, RUN_KILLED) is None

    assert load_stats(state, [RUN_OK, RUN_PARTIAL]) == {RUN_OK: RunStats(1, 2, 0, 41.5)}
    assert reads_by_job(state, T0 - timedelta(days=1)) == {"reconcile": 14}
    assert last_customer_count(state, "reconcile", "test") == 1150


def assert_old_state_carries_on(state: StateStore) -> None:
    """What a run does next on the upgraded database: take over the dead run's lease,
    resume its listing, audit a write, record a new run."""
    at = T0 + timedelta(days=3)
    assert state.acquire_lock("reconcile", "worker-2:1:run-next", 45, now=at)
    state.start_run("run-next", "reconcile", mode="test", started_at=at)
    adopted = CheckpointStore(state.engine).adopt_listing("run-next", RUN_KILLED)
    assert adopted is not None
    assert adopted.listing_id == RUN_KILLED
    assert resumed_from(state, "run-next") == RUN_KILLED
    entry_id = AuditLog(state.engine).begin(
        run_id="run-next",
        job="reconcile",
        action="noop",
        customer_id=None,
        user_id=None,
        before=None,
        idempotency_key=None,
    )
    assert entry_id == 4  # after 0.1.0's three rows
    state.finish_run("run-next", RunStatus.SUCCEEDED, finished_at=at + timedelta(seconds=1))
    assert state.list_runs(limit=1)[0].run_id == "run-next"
