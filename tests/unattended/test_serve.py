"""`stripe-reconcile serve` stops cleanly on SIGTERM, and a running job stops at a checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from jobs.apply import CONFIRM_LIVE_ENV
from jobs.reconcile_job import JOB
from jobs.registry import JOBS
from jobs.runner import execute_job
from jobs.scheduler import check_live_confirmation, run_scheduled, scheduled_jobs
from reconcile.errors import ConfigError
from reconcile.state.store import RunStatus, StateStore
from reconcile.unattended_settings import ScheduleEntry, ScheduleSettings
from sandbox.runner import SandboxServer
from tests.maintenance.world import build
from tests.seeded import SeededWorld
from tests.unattended.helpers import (
    SCRIPT,
    env_for,
    list_requests,
    start,
    wait_for,
    write_config,
)

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


# --- a schedule is checked before anything runs; live writes need the one confirmation ---

LIVE_KEY = "sk_live_" + "ServeKey0000000000abcd"


def _serve_until_exit(
    world: SeededWorld, tmp_path: Path, schedule: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`serve --run-now` with `schedule`; it must exit by itself (a refusal at start)."""
    config = write_config(world, tmp_path, schedule)
    world.sandbox.request_log.clear()
    process = subprocess.Popen(
        [str(SCRIPT), "serve", "--run-now", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env_for(world), **env},
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # still serving: it ran the schedule instead of refusing
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _error_line(stderr: str) -> str:
    (line,) = [line for line in stderr.splitlines() if line.startswith("stripe-reconcile:")]
    return line


def test_serve_refuses_a_string_boolean_option_before_any_request(
    world: SeededWorld, tmp_path: Path
) -> None:
    done = _serve_until_exit(
        world,
        tmp_path,
        '[schedule.jobs.sync-metadata]\ncron = "17 3 * * *"\noptions = { apply = "false" }\n',
    )
    assert done.returncode == 2, done.stderr
    assert _error_line(done.stderr).endswith(
        "[schedule.jobs.sync-metadata] options.apply: expected true or false, "
        'got the string "false"'
    )
    assert world.sandbox.request_log.entries() == []


@pytest.mark.parametrize(
    "options",
    [
        "{ apply = true }",
        '{ apply = true, confirm_live = "no" }',
        "{ apply = true, confirm_live = false }",
    ],
)
def test_serve_refuses_live_writes_without_confirmation_before_any_request(
    world: SeededWorld, tmp_path: Path, options: str
) -> None:
    done = _serve_until_exit(
        world,
        tmp_path,
        f'[schedule.jobs.dedupe]\ncron = "17 3 * * *"\noptions = {options}\n',
        STRIPE_SECRET_KEY=LIVE_KEY,
    )
    assert done.returncode == 2, done.stderr
    line = _error_line(done.stderr)
    assert "[schedule.jobs.dedupe]" in line
    assert "confirm" in line
    assert LIVE_KEY not in done.stderr
    assert world.sandbox.request_log.entries() == []


def test_serve_refuses_a_malformed_confirmation_variable(
    world: SeededWorld, tmp_path: Path
) -> None:
    done = _serve_until_exit(world, tmp_path, SCHEDULE, STRIPE_RECONCILE_CONFIRM_LIVE="maybe")
    assert done.returncode == 2, done.stderr
    assert "STRIPE_RECONCILE_CONFIRM_LIVE='maybe' is neither yes nor no" in _error_line(done.stderr)
    assert world.sandbox.request_log.entries() == []


@pytest.mark.parametrize("confirmation", ["variable", "option"])
def test_a_scheduled_live_write_is_confirmed_by_the_variable_or_the_option(
    sandbox_server: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    confirmation: str,
) -> None:
    live = build(sandbox_server, tmp_path, f"sqlite:///{tmp_path / 'users.db'}", mode="live")
    options: dict[str, object] = {"apply": True}
    if confirmation == "option":
        options["confirm_live"] = True
        monkeypatch.delenv(CONFIRM_LIVE_ENV, raising=False)
    else:
        monkeypatch.setenv(CONFIRM_LIVE_ENV, "true")
    settings = live.settings.model_copy(
        update={
            "schedule": ScheduleSettings(
                jobs={"sync-metadata": ScheduleEntry(cron="17 3 * * *", options=options)}
            )
        }
    )
    (scheduled,) = scheduled_jobs(settings, JOBS)
    check_live_confirmation(settings, [scheduled], os.environ)  # serve's start: no refusal

    run_scheduled(settings)(scheduled, threading.Event())

    assert live.customer("cus_sync1").metadata["plan"] == "pro"
    assert [w.path for w in live.writes()]  # the fire wrote, in live mode
    state = StateStore(settings.state.url)
    try:
        (record,) = state.list_runs("sync-metadata")
        assert record.status is RunStatus.SUCCEEDED
    finally:
        state.close()


def test_a_scheduled_live_write_without_confirmation_writes_nothing(
    sandbox_server: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = build(sandbox_server, tmp_path, f"sqlite:///{tmp_path / 'users.db'}", mode="live")
    monkeypatch.delenv(CONFIRM_LIVE_ENV, raising=False)
    settings = live.settings.model_copy(
        update={
            "schedule": ScheduleSettings(
                jobs={"sync-metadata": ScheduleEntry(cron="17 3 * * *", options={"apply": True})}
            )
        }
    )
    (scheduled,) = scheduled_jobs(settings, JOBS)
    with pytest.raises(ConfigError, match="without confirmation"):
        check_live_confirmation(settings, [scheduled], os.environ)
    # Even a fire that bypassed serve's start check is refused at the write.
    run_scheduled(settings)(scheduled, threading.Event())
    assert live.writes() == []
    assert live.customer("cus_sync1").metadata["plan"] == "free"
