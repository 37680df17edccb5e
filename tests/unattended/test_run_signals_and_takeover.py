"""Kubernetes retries that resume: `run` stops cleanly on SIGTERM and SIGINT, and a run
killed on another host frees its job within one lease, so a retried pod resumes it."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from jobs.reconcile_job import JOB
from jobs.runner import execute_job
from reconcile.errors import LockHeldError
from reconcile.state.history import resumed_from
from reconcile.state.store import RunStatus, StateStore
from tests.seeded import SeededWorld
from tests.unattended.helpers import SCRIPT, env_for, list_requests, start, wait_for, write_config

# A lease of a few seconds, so a takeover is quick to test; 45 s by default.
SHORT_LEASE = "[resume]\nlease_seconds = 3\n"


def _findings(run_dir: Path) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / "findings.csv", dtype=str, keep_default_na=False)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def _events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_run_stops_it_interrupted_with_the_lock_free_and_no_report(
    slow_world: SeededWorld, tmp_path: Path, signum: signal.Signals
) -> None:
    world = slow_world
    config = write_config(world, tmp_path)
    process = start(["run", "reconcile", "--config", str(config)], world)
    try:
        wait_for(lambda: list_requests(world.sandbox) >= 8, "the run to be listing")
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # 130: interrupted, resumable (the code a Ctrl-C always had); not a crash, not a success.
    assert process.returncode == 130, stderr
    assert stdout == ""
    assert "run the job again with --resume to continue" in stderr
    assert "listing stopped at a checkpoint" in [e["event"] for e in _events(stderr)]
    stopped_at = list_requests(world.sandbox)
    assert stopped_at < 30, "the listing went on after the signal"

    state = StateStore(world.settings.state.url)
    try:
        (interrupted,) = state.list_runs("reconcile")
        assert interrupted.status is RunStatus.INTERRUPTED
        assert interrupted.report_dir is None
        assert state.lock_holder("reconcile") is None
    finally:
        state.close()
    assert not (tmp_path / "out" / "reconcile" / interrupted.run_id).exists()

    # The next `--resume` continues it at once: the lock was released, not left to expire.
    resumed = execute_job(JOB, world.settings, options={"resume": True})
    assert resumed.summary["resumed_from"] == interrupted.run_id


def _retry_from_another_host(config: Path, world: SeededWorld) -> subprocess.Popen[str]:
    # A retried pod: a new hostname, the same state DB, `--resume` as the CronJob says.
    command = f"hostname retry-pod && exec {shlex.quote(str(SCRIPT))} run reconcile --resume "
    command += f"--config {shlex.quote(str(config))}"
    return subprocess.Popen(
        ["unshare", "-u", "sh", "-c", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(world),
    )


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) (util-linux)")
def test_a_run_killed_on_one_host_is_resumed_by_a_retry_on_another(
    slow_world: SeededWorld, tmp_path: Path
) -> None:
    world = slow_world
    sandbox = world.sandbox
    config = write_config(world, tmp_path, SHORT_LEASE)
    reference = execute_job(JOB, world.settings, out_dir=tmp_path / "reference")
    full_requests = list_requests(sandbox)

    sandbox.request_log.clear()
    process = start(["run", "reconcile", "--config", str(config)], world)
    try:
        wait_for(lambda: list_requests(sandbox) >= full_requests // 3, "list pages")
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    killed_at = time.monotonic()
    state = StateStore(world.settings.state.url)
    try:
        killed = state.list_runs("reconcile", limit=1)[0]
        assert killed.status is RunStatus.RUNNING
        holder = state.lock_holder("reconcile")
        assert holder is not None
        assert holder.owner.endswith(killed.run_id)
    finally:
        state.close()

    # Retried at once, as a Job's next pod would be: it waits out the dead run's lease
    # (it cannot see that process from its host) and resumes instead of exiting 5.
    retry = _retry_from_another_host(config, world)
    stdout, stderr = retry.communicate(timeout=120)
    took = time.monotonic() - killed_at
    assert retry.returncode == 0, stderr
    assert took < 90
    logged = [e["event"] for e in _events(stderr)]
    # Usually the retry finds the dead run's short lease still running and waits it out; on
    # a loaded machine its start-up can outlast the lease, and it takes the lease over at
    # once. Either way the dead run is marked interrupted and resumed, never exit 5.
    took_over = {
        "waiting for the lease of a run that stopped renewing it",
        "marked a dead run interrupted",
    }
    assert took_over & set(logged), logged
    assert "resuming" in logged

    run_dir = Path(stdout.strip().splitlines()[-1])
    pd.testing.assert_frame_equal(_findings(run_dir), _findings(reference.run_dir))
    state = StateStore(world.settings.state.url)
    try:
        dead = state.get_run(killed.run_id)
        assert dead is not None
        assert dead.status is RunStatus.INTERRUPTED
        assert "lease expired" in (dead.error or "")
        newest = state.list_runs("reconcile", limit=1)[0]
        assert newest.status is RunStatus.SUCCEEDED
        assert resumed_from(state, newest.run_id) == killed.run_id
        assert state.lock_holder("reconcile") is None
    finally:
        state.close()


def test_a_resume_does_not_wait_for_a_live_run_on_another_host(
    world: SeededWorld, tmp_path: Path
) -> None:
    settings = world.settings.model_copy(
        update={"resume": world.settings.resume.model_copy(update={"lease_seconds": 3.0})}
    )
    store = StateStore(settings.state.url)
    try:
        # Alive elsewhere: it renews its lease, so the retry gives up (exit 5) within a lease.
        with store.lease("reconcile", "elsewhere:1:20261127T000000Z-aaaaaa", 3, renew_every=0.5):
            started = time.monotonic()
            with pytest.raises(LockHeldError, match="holds the lock"):
                execute_job(JOB, settings, options={"resume": True})
            assert time.monotonic() - started < 5
        assert list_requests(world.sandbox) == 0
    finally:
        store.close()
