"""A run killed with SIGKILL in the middle of its listing resumes where it stopped."""

from __future__ import annotations

import signal
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from jobs.commands.cli import cli
from jobs.reconcile_job import JOB
from jobs.runner import execute_job
from reconcile.listing.checkpoints import CheckpointStore
from reconcile.state.history import resumed_from
from reconcile.state.store import RunStatus, StateStore
from tests.seeded import SeededWorld
from tests.unattended.helpers import env_for, list_requests, start, wait_for, write_config


def _findings(run_dir: Path) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / "findings.csv", dtype=str, keep_default_na=False)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def test_sigkill_mid_listing_then_resume_gives_the_same_findings_with_fewer_requests(
    slow_world: SeededWorld, tmp_path: Path
) -> None:
    world = slow_world
    sandbox = world.sandbox
    config = write_config(world, tmp_path)

    # The reference: one uninterrupted run, cut by the shape of the account's first listing
    # as the killed run will be (reconcile.rules.listing_plan).
    execute_job(JOB, world.settings, out_dir=tmp_path / "first")
    sandbox.request_log.clear()
    reference = execute_job(JOB, world.settings, out_dir=tmp_path / "reference")
    full_requests = list_requests(sandbox)
    assert full_requests >= 30

    # A run killed after a third of its list pages came back.
    sandbox.request_log.clear()
    process = start(["run", "reconcile", "--config", str(config)], world)
    try:
        wait_for(lambda: list_requests(sandbox) >= full_requests // 3, "list pages")
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    killed_requests = list_requests(sandbox)
    assert killed_requests < full_requests, "the run finished before it was killed"

    state = StateStore(world.settings.state.url)
    try:
        killed = state.list_runs("reconcile", limit=1)[0]
        assert killed.status is RunStatus.RUNNING  # nobody could record its death
        listing = CheckpointStore(state.engine).listing_of(killed.run_id)
        assert listing is not None
        stored = sum(w.rows for w in CheckpointStore(state.engine).windows(listing.listing_id))
        assert stored > 0
        work_dir = Path(listing.work_dir)
        assert work_dir.is_dir()
        assert not (tmp_path / "out" / "reconcile" / killed.run_id).exists()
        assert work_dir.name.startswith(".work-")
    finally:
        state.close()

    # Resume: the dead holder is reaped at once, the stored pages are not fetched again.
    sandbox.request_log.clear()
    result = CliRunner().invoke(
        cli, ["run", "reconcile", "--resume", "--config", str(config)], env=env_for(world)
    )
    assert result.exit_code == 0, result.output + result.stderr
    resumed_requests = list_requests(sandbox)
    assert resumed_requests < full_requests
    # Every page is fetched once: what the killed run stored plus what the resumed run
    # fetched covers the listing (a page in flight at the kill may be fetched twice).
    assert resumed_requests + killed_requests >= full_requests

    run_dir = Path(result.stdout.strip().splitlines()[-1])
    pd.testing.assert_frame_equal(_findings(run_dir), _findings(reference.run_dir))

    state = StateStore(world.settings.state.url)
    try:
        assert state.get_run(killed.run_id).status is RunStatus.INTERRUPTED  # type: ignore[union-attr]
        newest = state.list_runs("reconcile", limit=1)[0]
        assert newest.status is RunStatus.SUCCEEDED
        assert resumed_from(state, newest.run_id) == killed.run_id
        # The report is in place, so the work folder and its cursors are gone.
        assert not work_dir.exists()
        assert CheckpointStore(state.engine).windows(listing.listing_id) == []
    finally:
        state.close()
