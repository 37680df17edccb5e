"""Runs started together on a fresh state DB all open it: table creation races are harmless."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from reconcile.listing.checkpoints import CheckpointStore
from reconcile.state.audit import AuditLog
from reconcile.state.history import load_stats
from reconcile.state.reminders_sent import ReminderMemory
from reconcile.state.store import RunStatus, StateStore
from tests.seeded import SeededWorld
from tests.unattended.helpers import start, wait_for, write_config

_CREATORS = 6


def _open_everything(url: str) -> None:
    # What one run opens on its way: every module that creates tables of its own.
    state = StateStore(url)
    try:
        CheckpointStore(state.engine)
        AuditLog(state.engine)
        ReminderMemory(state.engine, "test")
        load_stats(state, [])
    finally:
        state.close()


def _race(action: Callable[[], None], creators: int) -> list[BaseException]:
    start = threading.Barrier(creators)
    errors: list[BaseException] = []

    def creator() -> None:
        start.wait()
        try:
            action()
        except BaseException as exc:  # every failure is the finding
            errors.append(exc)

    threads = [threading.Thread(target=creator) for _ in range(creators)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


@pytest.mark.parametrize("round_", range(3))
def test_runs_opening_a_fresh_state_db_together_all_succeed(database_url: str, round_: int) -> None:
    errors = _race(lambda: _open_everything(database_url), _CREATORS)
    assert errors == []
    engine = sa.create_engine(database_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {
        "stripe_reconcile_runs",
        "stripe_reconcile_locks",
        "stripe_reconcile_run_listings",
        "stripe_reconcile_checkpoints",
        "stripe_reconcile_audit",
        "stripe_reconcile_reminders",
        "stripe_reconcile_run_stats",
    } <= tables


TWO_JOBS = (
    "[schedule]\n"
    '[schedule.jobs.reconcile]\ncron = "17 3 * * *"\n'
    '[schedule.jobs.card-expiry]\ncron = "17 3 * * *"\n'
)


def _runs_table_made(url: str) -> bool:
    database = sa.make_url(url).database
    if url.startswith("sqlite") and not (database and Path(database).exists()):
        return False
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).has_table("stripe_reconcile_runs")
    finally:
        engine.dispose()


def test_serve_starting_two_jobs_on_a_fresh_state_db_runs_both(
    world: SeededWorld, tmp_path: Path, database_url: str
) -> None:
    config = write_config(world, tmp_path, TWO_JOBS)
    # A state DB no run has opened yet (the world's own one may have been).
    config.write_text(config.read_text().replace(world.settings.state.url, database_url))
    process = start(["serve", "--run-now", "--config", str(config)], world)
    state: StateStore | None = None
    try:

        def both_finished() -> bool:
            nonlocal state
            if state is None:
                if not _runs_table_made(database_url):
                    return False  # opening it here would join the race the test is about
                state = StateStore(database_url)
            runs = state.list_runs()
            return len(runs) == 2 and all(r.status is not RunStatus.RUNNING for r in runs)

        try:
            wait_for(lambda: process.poll() is not None or both_finished(), "both runs", 60)
        except AssertionError as timed_out:
            # What serve was doing: its log, for the diagnosis.
            process.kill()
            _, stderr = process.communicate(timeout=60)
            raise AssertionError(f"{timed_out}; serve's log ends: {stderr[-4000:]}") from None
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert state is not None, stderr
        runs = {r.job: r.status for r in state.list_runs()}
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        if state is not None:
            state.close()
    assert process.returncode == 0, stderr
    assert "scheduled run failed" not in stderr
    assert runs == {"reconcile": RunStatus.SUCCEEDED, "card-expiry": RunStatus.SUCCEEDED}
