"""A listing's rows live as long as a run may resume it: the listing tables stay the same
size however many runs there are, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs.base import RESUME_OPTION
from jobs.reconcile_job import JOB
from jobs.runner import execute_job
from reconcile.settings import Settings, StateSettings
from reconcile.state.checkpoints import CheckpointStore
from reconcile.state.history import resumed_from
from reconcile.state.store import RunStatus, StateStore
from tests.seeded import SeededWorld


def _rows(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table: int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
                for table in ("stripe_reconcile_run_listings", "stripe_reconcile_checkpoints")
            }
    finally:
        engine.dispose()


def _died_with_its_listing(url: str, run_id: str, work_dir: Path) -> None:
    """What a killed run of the job leaves behind: its run failed, its listing stored."""
    state = StateStore(url)
    try:
        now = datetime.now(UTC)
        state.start_run(run_id, JOB.name, mode="test", started_at=now)
        CheckpointStore(state.engine).start_listing(
            run_id,
            JOB.name,
            created_lt=int(now.timestamp()),
            work_dir=str(work_dir),
            windows=[(None, int(now.timestamp()))],
        )
        state.finish_run(run_id, RunStatus.FAILED.value, finished_at=now)
    finally:
        state.close()


@pytest.fixture
def settings(world: SeededWorld, database_url: str) -> Settings:
    return world.settings.model_copy(update={"state": StateSettings(url=database_url)})


def test_the_listing_tables_do_not_grow_over_runs(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    after_each_cycle: list[dict[str, int]] = []
    for cycle in range(3):
        # A failed run resumed: its listing goes once the resuming run's report is in place.
        dead = f"dead-{cycle}-resumed"
        _died_with_its_listing(database_url, dead, tmp_path / dead)
        assert _rows(database_url)["stripe_reconcile_run_listings"] == 1
        resumed = execute_job(JOB, settings, options={RESUME_OPTION: True})
        state = StateStore(database_url)
        try:
            # Which run it resumed outlives the listing's rows.
            assert resumed_from(state, resumed.run_id) == dead
        finally:
            state.close()
        assert _rows(database_url) == {
            "stripe_reconcile_run_listings": 0,
            "stripe_reconcile_checkpoints": 0,
        }
        # A failed run not resumed: the next fresh listing sweeps it away.
        abandoned = f"dead-{cycle}-abandoned"
        _died_with_its_listing(database_url, abandoned, tmp_path / abandoned)
        execute_job(JOB, settings)
        after_each_cycle.append(_rows(database_url))
    assert (
        after_each_cycle
        == [{"stripe_reconcile_run_listings": 0, "stripe_reconcile_checkpoints": 0}] * 3
    )
