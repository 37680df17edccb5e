"""`stripe-reconcile runs`, the reaping of dead runs, and the metrics of every run."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from jobs.commands.cli import cli
from jobs.reconcile_job import JOB
from jobs.runner import execute_job
from reconcile.errors import DeliveryError
from reconcile.state.history import reap_dead_holder
from reconcile.state.store import RunStatus, StateStore
from reconcile.unattended_settings import MetricsSettings
from reports.metrics import write_metrics
from tests.seeded import SeededWorld
from tests.unattended.helpers import env_for, write_config


def test_runs_lists_and_shows_a_run(world: SeededWorld, tmp_path: Path) -> None:
    outcome = execute_job(JOB, world.settings)
    config = write_config(world, tmp_path)
    runner = CliRunner()
    listed = runner.invoke(cli, ["runs", "--config", str(config), "--job", "reconcile"])
    assert listed.exit_code == 0, listed.output
    header, row, reads = listed.stdout.splitlines()
    assert reads.startswith("reads in the last 30 days: ")
    assert header.split()[:3] == ["RUN", "ID", "JOB"]
    total = sum(outcome.summary["counts_by_kind"].values())
    requests = outcome.summary["requests_total"]
    assert row.split() == [
        outcome.run_id,
        "reconcile",
        "succeeded",
        *row.split()[3:5],
        row.split()[5],
        str(total),
        str(requests),
        "0",
    ]
    shown = runner.invoke(cli, ["runs", "show", outcome.run_id, "--config", str(config)])
    assert shown.exit_code == 0, shown.output
    text = shown.stdout
    assert f"run        {outcome.run_id}" in text
    assert "status     succeeded" in text
    assert f"report     {outcome.run_dir}" in text
    for kind, count in outcome.summary["counts_by_kind"].items():
        assert any(line.split() == [kind, str(count)] for line in text.splitlines())
    for endpoint, count in outcome.summary["requests_by_endpoint"].items():
        assert f"{endpoint}  " in text
        assert str(count) in text
    # 404s of missing customers count as errors; 429s and retries come from the gateway.
    assert re.search(
        rf"^429s       {outcome.summary['rate_limited']}   retries {outcome.summary['retries']}"
        r"   errors \d+$",
        text,
        re.M,
    )

    missing = runner.invoke(cli, ["runs", "show", "nope", "--config", str(config)])
    assert missing.exit_code == 2
    assert "run nope is not recorded" in missing.stderr
    empty = runner.invoke(cli, ["runs", "--config", str(config), "--job", "dedupe"])
    assert empty.stdout.strip() == "no runs recorded"


def test_a_dead_holder_is_marked_interrupted_when_its_lease_is_taken_over(
    sqlite_url: str,
) -> None:
    state = StateStore(sqlite_url)
    now = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    try:
        # Another host's run whose lease has not expired: alive as far as we know.
        state.start_run("r-elsewhere", "reconcile", started_at=now)
        assert state.acquire_lock("reconcile", "other-host:123:r-elsewhere", 300, now=now)
        assert reap_dead_holder(state, "reconcile", now=now + timedelta(seconds=60)) is None
        assert state.get_run("r-elsewhere").status is RunStatus.RUNNING  # type: ignore[union-attr]
        # Once it expired, it is dead.
        later = now + timedelta(seconds=301)
        assert reap_dead_holder(state, "reconcile", now=later) == "r-elsewhere"
        record = state.get_run("r-elsewhere")
        assert record is not None
        assert record.status is RunStatus.INTERRUPTED
        assert "lease expired" in (record.error or "")
        # On this host, a gone process is dead at once, lease or not.
        state.start_run("r-here", "reconcile", started_at=later)
        assert state.acquire_lock("reconcile", "myhost:999999:r-here", 300, now=later)
        reaped = reap_dead_holder(
            state, "reconcile", now=later, host="myhost", pid_alive=lambda pid: False
        )
        assert reaped == "r-here"
        assert state.acquire_lock("reconcile", "myhost:1:r-next", 300, now=later)
    finally:
        state.close()


class _Pushgateway(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(("PUT", self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def pushgateway() -> Iterator[str]:
    _Pushgateway.received = []
    server = HTTPServer(("127.0.0.1", 0), _Pushgateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_every_run_writes_a_textfile_and_pushes(
    world: SeededWorld, tmp_path: Path, pushgateway: str
) -> None:
    metrics = MetricsSettings(textfile_dir=str(tmp_path), pushgateway_url=pushgateway)
    settings = world.settings.model_copy(update={"metrics": metrics})
    outcome = execute_job(JOB, settings)
    text = (tmp_path / "stripe_reconcile_reconcile.prom").read_text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    job = (("job_name", "reconcile"),)
    assert samples[("stripe_reconcile_last_run_status", (*job, ("status", "succeeded")))] == 1
    assert samples[("stripe_reconcile_last_run_status", (*job, ("status", "failed")))] == 0
    assert samples[("stripe_reconcile_rate_limited", job)] == 0
    assert samples[("stripe_reconcile_last_run_duration_seconds", job)] > 0
    finished = datetime.fromisoformat(outcome.summary["finished_at"]).timestamp()
    assert samples[("stripe_reconcile_last_success_timestamp_seconds", job)] == finished
    for kind, count in outcome.summary["counts_by_kind"].items():
        assert (
            sum(
                value
                for (name, labels), value in samples.items()
                if name == "stripe_reconcile_findings" and ("kind", kind) in labels
            )
            == count
        )
    for endpoint, count in outcome.summary["requests_by_endpoint"].items():
        key = ("stripe_reconcile_requests", (("endpoint", endpoint), ("job_name", "reconcile")))
        assert samples[key] == count
    assert not [
        p for p in os.listdir(tmp_path) if not p.endswith(".prom") and p.startswith("stripe")
    ]
    ((method, path, body),) = _Pushgateway.received
    assert (method, path) == ("PUT", "/metrics/job/stripe-reconcile/job_name/reconcile")
    assert b"stripe_reconcile_last_run_findings" in body


def test_a_failed_push_exits_7_and_keeps_the_reports(world: SeededWorld, tmp_path: Path) -> None:
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    config = write_config(world, tmp_path, f'[metrics]\npushgateway_url = "{dead}"\n')
    result = CliRunner().invoke(
        cli, ["run", "reconcile", "--config", str(config)], env=env_for(world)
    )
    assert result.exit_code == 7, result.output
    assert f"metrics push to {dead} failed" in result.stderr
    (run_dir,) = (tmp_path / "out" / "reconcile").iterdir()
    assert (run_dir / "findings.csv").is_file()
    outcome = execute_job(JOB, world.settings)
    dead_push = world.settings.model_copy(update={"metrics": MetricsSettings(pushgateway_url=dead)})
    with pytest.raises(DeliveryError, match="metrics push"):
        write_metrics(outcome, dead_push)
