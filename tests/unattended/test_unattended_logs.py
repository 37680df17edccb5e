"""Logs for unattended runs: libraries' stdlib logging in the same format and through the
same redaction, `--log-format`, throttled progress events, no collision with a bar."""

from __future__ import annotations

import io
import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from click.testing import CliRunner

from jobs.commands.cli import cli
from reconcile.logs import configure_logging, get_logger
from reconcile.progress import ProgressEvents, progress
from tests.seeded import SeededWorld
from tests.unattended.helpers import env_for, write_config

ADDRESS = "ada.lovelace@example.com"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_apscheduler_and_stdlib_records_are_json_lines_through_redaction() -> None:
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    ran = threading.Event()
    scheduler = BackgroundScheduler()
    structlog.contextvars.bind_contextvars(run_id="r-1", job="reconcile")
    try:
        # An interval job is kept after it runs: no removal racing the shutdown.
        scheduler.add_job(
            ran.set, "interval", hours=1, next_run_time=datetime.now(UTC), name=f"remind {ADDRESS}"
        )
        scheduler.start()
        assert ran.wait(10)
        logging.getLogger("some.library").warning("could not reach %s", ADDRESS)
    finally:
        scheduler.shutdown(wait=True)
        structlog.contextvars.unbind_contextvars("run_id", "job")
        configure_logging("info")
    text = stream.getvalue()
    assert ADDRESS not in text
    events = _events(text)  # every line is one JSON object: nothing in another format
    scheduler_lines = [e for e in events if e.get("logger", "").startswith("apscheduler")]
    assert any("[email]" in e["event"] for e in scheduler_lines), scheduler_lines
    (library,) = [e for e in events if e.get("logger") == "some.library"]
    assert library["event"] == "could not reach [email]"
    assert library["level"] == "warning"
    assert library["run_id"] == "r-1"
    assert "timestamp" in library


def test_log_format_and_level_on_the_command_line(world: SeededWorld, tmp_path: Path) -> None:
    config = write_config(world, tmp_path)
    runner = CliRunner()

    def run(*options: str) -> str:
        result = runner.invoke(
            cli, [*options, "run", "reconcile", "--config", str(config)], env=env_for(world)
        )
        assert result.exit_code in (0, 1), result.output
        return result.stderr

    as_json = _events(run("--log-format", "json"))
    assert any(e["event"] == "run started" for e in as_json)
    console = run("--log-format", "console").splitlines()
    assert any("run started" in line and not line.startswith("{") for line in console)
    assert run("--log-format", "json", "--log-level", "warning").strip() == ""
    wrong = runner.invoke(cli, ["--log-format", "xml", "runs"], env=env_for(world))
    assert wrong.exit_code == 2
    assert "xml" in wrong.stderr


def test_progress_events_at_most_one_per_10_seconds() -> None:
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    now = [100.0]
    try:
        with structlog.contextvars.bound_contextvars(run_id="r-2", job="card-expiry"):
            advance = ProgressEvents("checking cards", 1000, clock=lambda: now[0])

        def scan() -> None:  # a worker thread: the run's context is not its own
            for _ in range(100):  # 10 customers a second for 100 s, one call each second
                now[0] += 1.0
                advance(10)

        worker = threading.Thread(target=scan)
        worker.start()
        worker.join()
        listing = ProgressEvents("listing customers", None, clock=lambda: now[0])
        now[0] += 5.0
        listing(100)  # a phase shorter than 10 s says nothing
    finally:
        configure_logging("info")
    events = [e for e in _events(stream.getvalue()) if e["event"] == "progress"]
    assert len(events) == 10
    first = events[0]
    assert first["phase"] == "checking cards"
    assert (first["done"], first["total"], first["elapsed_seconds"]) == (100, 1000, 10.0)
    assert first["rate_per_second"] == 10.0
    assert first["eta_seconds"] == 90.0
    assert (first["run_id"], first["job"]) == ("r-2", "card-expiry")
    assert [e["done"] for e in events] == list(range(100, 1001, 100))
    assert events[-1]["eta_seconds"] == 0.0


def test_a_listing_reports_pages_and_nothing_reaches_a_plain_stream() -> None:
    logs = io.StringIO()
    configure_logging("info", stream=logs)
    now = [0.0]
    plain = io.StringIO()
    try:
        with progress("listing customers", stream=plain, clock=lambda: now[0]) as advance:
            for _ in range(3):
                now[0] += 6.0
                advance(100)
    finally:
        configure_logging("info")
    assert plain.getvalue() == ""
    (event,) = [e for e in _events(logs.getvalue()) if e["event"] == "progress"]
    assert (event["phase"], event["done"], event["pages"]) == ("listing customers", 200, 2)
    assert "eta_seconds" not in event


def test_log_lines_do_not_land_inside_a_live_bar() -> None:
    terminal = _Terminal()
    configure_logging("info", stream=terminal, log_format="json")
    try:
        with progress("listing customers", total=10, stream=terminal) as advance:
            advance(3)
            get_logger("test").warning("halfway there")
            logging.getLogger("some.library").warning("a library speaks")
            advance(7)
    finally:
        configure_logging("info")
    lines = terminal.getvalue().replace("\r", "\n").splitlines()
    for text in ("halfway there", "a library speaks"):
        (line,) = [x for x in lines if text in x]
        assert "listing customers" not in line
        # The JSON object is whole on its line, not cut by the bar's redraw.
        start = line.index("{")
        assert json.loads(line[start:])["event"] == text
