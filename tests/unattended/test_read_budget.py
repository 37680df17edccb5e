"""Stripe's read allocation: reads recorded per run, shown by `runs`, a budget kept to."""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobs.commands.cli import cli
from jobs.reconcile_job import JOB
from jobs.runner import execute_job
from reconcile.errors import ConfigError
from reconcile.logs import configure_logging
from reconcile.state.read_budget import (
    check_read_budget,
    estimate_reads,
    reads_by_job,
    record_reads,
)
from reconcile.state.store import StateStore
from tests.seeded import SeededWorld
from tests.unattended.helpers import env_for, write_config


def _gets(by_endpoint: dict[str, int]) -> int:
    return sum(n for endpoint, n in by_endpoint.items() if endpoint.startswith("GET "))


def test_every_run_records_its_reads_and_runs_shows_them_by_job(
    world: SeededWorld, tmp_path: Path
) -> None:
    first = execute_job(JOB, world.settings)
    second = execute_job(JOB, world.settings)
    expected = _gets(first.summary["requests_by_endpoint"]) + _gets(
        second.summary["requests_by_endpoint"]
    )
    assert expected > 0
    state = StateStore(world.settings.state.url)
    try:
        assert reads_by_job(state, datetime.now(UTC) - timedelta(days=30)) == {
            "reconcile": expected
        }
    finally:
        state.close()
    config = write_config(world, tmp_path, "[stripe]\nmonthly_read_budget = 10000\n")
    listed = CliRunner().invoke(cli, ["runs", "--config", str(config)], env=env_for(world))
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[-1] == (
        f"reads in the last 30 days: {expected} (reconcile {expected}); "
        f"monthly_read_budget 10000: {100 * expected / 10000:.0f} % used"
    )


def test_a_run_that_would_overspend_is_refused_before_its_first_request(
    world: SeededWorld, tmp_path: Path
) -> None:
    first = execute_job(JOB, world.settings)
    used = _gets(first.summary["requests_by_endpoint"])
    pages = math.ceil(first.summary["customers_scanned"] / 100)
    # One read fewer than the listing needs is left.
    config = write_config(world, tmp_path, f"[stripe]\nmonthly_read_budget = {used + pages - 1}\n")
    requests_before = len(world.sandbox.request_log)
    refused = CliRunner().invoke(
        cli, ["run", "reconcile", "--config", str(config)], env=env_for(world)
    )
    assert refused.exit_code == 2, refused.output
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("stripe-reconcile: error")]
    assert f"monthly_read_budget = {used + pages - 1}" in line
    assert f"about {pages} reads and {pages - 1} are left" in line
    assert len(world.sandbox.request_log) == requests_before
    assert not (tmp_path / "out" / "reconcile").exists()

    # With exactly what the listing needs left, the run goes ahead.
    enough = write_config(world, tmp_path, f"[stripe]\nmonthly_read_budget = {used + 10 * pages}\n")
    ran = CliRunner().invoke(cli, ["run", "reconcile", "--config", str(enough)], env=env_for(world))
    assert ran.exit_code in (0, 1), ran.output


def test_all_cards_counts_a_read_per_customer_and_the_count_falls_back_to_any_job(
    sqlite_url: str,
) -> None:
    state = StateStore(sqlite_url)
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    try:
        # No customer count recorded yet: no estimate, nothing refused.
        assert check_read_budget(
            state, job="card-expiry", mode="test", budget=10, options={"all_cards": True}, now=now
        )
        record_reads(state, "r1", job="reconcile", mode="test", reads=5, customers=950, at=now)
        # Live-mode reads and reads older than 30 days do not count against the test budget.
        record_reads(state, "r2", job="reconcile", mode="live", reads=900, customers=None, at=now)
        old = now - timedelta(days=31)
        record_reads(state, "r3", job="reconcile", mode="test", reads=900, customers=None, at=old)
        use = check_read_budget(
            state, job="card-expiry", mode="test", budget=15, options={}, now=now
        )
        assert use is not None
        assert (use.used, use.left) == (5, 10)
        with pytest.raises(ConfigError, match=r"about 960 reads and 895 are left"):
            check_read_budget(
                state,
                job="card-expiry",
                mode="test",
                budget=900,
                options={"all_cards": True},
                now=now,
            )
        assert estimate_reads(950, all_cards=True) == 10 + 950
        # The job's own last count wins over another job's.
        record_reads(state, "r4", job="card-expiry", mode="test", reads=0, customers=50, at=now)
        assert check_read_budget(
            state, job="card-expiry", mode="test", budget=61, options={"all_cards": True}, now=now
        )
    finally:
        state.close()


def test_the_log_warns_at_80_percent_of_the_budget(sqlite_url: str) -> None:
    state = StateStore(sqlite_url)
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    try:
        record_reads(state, "r1", job="reconcile", mode="test", reads=79, customers=None, at=now)
        check_read_budget(state, job="reconcile", mode="test", budget=100, options={}, now=now)
        assert stream.getvalue() == ""
        record_reads(state, "r2", job="reconcile", mode="test", reads=1, customers=None, at=now)
        check_read_budget(state, job="reconcile", mode="test", budget=100, options={}, now=now)
    finally:
        configure_logging("info")
        state.close()
    (event,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert event["event"] == "read budget mostly used"
    assert (event["level"], event["reads_30_days"], event["used_percent"]) == ("warning", 80, 80.0)


def test_card_expiry_all_cards_is_refused_when_a_read_per_customer_does_not_fit(
    world: SeededWorld, tmp_path: Path
) -> None:
    first = execute_job(JOB, world.settings)
    used = _gets(first.summary["requests_by_endpoint"])
    customers = first.summary["customers_scanned"]
    pages = math.ceil(customers / 100)
    # Room for a listing (and then some), not for a card scan of every customer.
    budget = used + pages + customers // 2
    config = write_config(world, tmp_path, f"[stripe]\nmonthly_read_budget = {budget}\n")
    requests_before = len(world.sandbox.request_log)
    refused = CliRunner().invoke(
        cli, ["run", "card-expiry", "--all-cards", "--config", str(config)], env=env_for(world)
    )
    assert refused.exit_code == 2, refused.output
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("stripe-reconcile: error")]
    assert f"about {pages + customers} reads" in line
    assert "without --all-cards" in line
    assert len(world.sandbox.request_log) == requests_before
    default_cards = CliRunner().invoke(
        cli, ["run", "card-expiry", "--config", str(config)], env=env_for(world)
    )
    assert default_cards.exit_code in (0, 1), default_cards.output
