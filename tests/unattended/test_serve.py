"""`stripe-reconcile serve` stops cleanly on SIGTERM, and a running job stops at a checkpoint."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from jobs.reconcile_job import JOB
from jobs.runner import execute_job
from jobs.state import RunStatus, StateStore
from tests.seeded import SeededWorld
from tests.unattended.helpers import list_requests, start, wait_for, write_config

SCHEDULE = '[schedule]\n[schedule.jobs.reconcile]\ncron = "17 3 * * *"\n'


def events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_sigterm_stops_an_idle_scheduler_with_exit_0(world: SeededWorld, tmp_path: Path) -> None:
    config = write_config(world, tmp_path, SCHEDULE)
    process = start(["serve", "--config", str(config)], world)
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "scheduler started" in line:
            break
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=30)
    assert process.returncode == 0, "".join(lines) + rest
    logged = events("".join(lines) + rest)
    scheduled = next(e for e in logged if e["event"] == "scheduled")
    assert scheduled["scheduled_job"] == "reconcile"
    assert str(scheduled["next_run"]).endswith("03:17:00+00:00")
    assert logged[-1]["event"] == "scheduler stopped"
    assert list_requests(world.sandbox) == 0  # nothing ran


def test_sigterm_during_a_run_checkpoints_it_and_a_resume_finishes_it(
    slow_world: SeededWorld, tmp_path: Path
) -> None:
    world = slow_world
    config = write_config(world, tmp_path, SCHEDULE)
    process = start(["serve", "--run-now", "--config", str(config)], world)
    try:
        wait_for(lambda: list_requests(world.sandbox) >= 8, "the run to be listing")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    logged = [e["event"] for e in events(stderr)]
    assert "listing stopped at a checkpoint" in logged
    assert logged[-1] == "scheduler stopped"

    state = StateStore(world.settings.state.url)
    try:
        (interrupted,) = state.list_runs("reconcile")
        assert interrupted.status is RunStatus.INTERRUPTED
        assert interrupted.report_dir is None  # no half report
    finally:
        state.close()
    assert not (tmp_path / "out" / "reconcile" / interrupted.run_id).exists()

    world.sandbox.request_log.clear()
    resumed = execute_job(JOB, world.settings, options={"resume": True})
    assert resumed.summary["resumed_from"] == interrupted.run_id
    resumed_requests = list_requests(world.sandbox)
    world.sandbox.request_log.clear()
    fresh = execute_job(JOB, world.settings, out_dir=tmp_path / "fresh")
    assert fresh.summary["resumed_from"] is None
    assert 0 < resumed_requests < list_requests(world.sandbox)
    for key in ("customers_scanned", "users_scanned", "counts_by_kind"):
        assert resumed.summary[key] == fresh.summary[key]
