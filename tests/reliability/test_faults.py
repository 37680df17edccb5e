"""Faults through the sandbox: every job ends with the findings of a fault-free run, writes
what a fault-free run writes (once), and reports how many retries it needed. A run that
cannot finish fails, exits non-zero and is never recorded as a success.

Backoff is shortened through the settings knob ([stripe] retry_initial_delay), not by
patching time.sleep.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from jobs.registry import JOBS
from jobs.runner import RunOutcome, execute_job
from reconcile.errors import EXIT_STRIPE, StripeError
from reconcile.settings import Settings
from reconcile.state.store import StateStore
from reconcile.state.tables import listing_profiles_table
from sandbox.runner import SandboxServer
from tests.reliability.faults import (
    PROFILES,
    FaultProfile,
    apply_profile,
    clear_profile,
    fault_counts,
    findings_key,
    successful_writes,
)
from tests.seeded import SeededWorld, build_world

# Enough retries that a 50% storm cannot exhaust them (0.5**21 per request), at
# milliseconds each.
PATIENT = {"max_retries": 20, "retry_initial_delay": 0.002}
WRITE_OPTIONS: dict[str, Any] = {"apply": True, "max_changes": 100_000}


def patient(settings: Settings, **stripe: Any) -> Settings:
    return settings.model_copy(
        update={
            "stripe": settings.stripe.model_copy(update={**PATIENT, **stripe}),
            # 16 date windows: more list requests on this small account, so each profile
            # draws its faults during the listing too.
            "resume": settings.resume.model_copy(update={"windows": 16}),
        }
    )


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Any:
    clear_profile(sandbox_server)
    yield sandbox_server
    clear_profile(sandbox_server)


def fresh_world(sandbox: SandboxServer, tmp_path: Path, name: str) -> SeededWorld:
    folder = tmp_path / name
    folder.mkdir()
    return build_world(sandbox, folder, f"sqlite:///{folder / 'users.db'}", seed=4, customers=40)


def run_job(world: SeededWorld, job: str, profile: FaultProfile) -> tuple[RunOutcome, list[Any]]:
    # Each run lists as an account's first listing does, by its 16 date windows, not cut by
    # the shape the run before kept (reconcile.rules.listing_plan): faults fall on the
    # listing's requests too.
    engine = sa.create_engine(world.settings.state.url)
    with engine.begin() as conn:
        if sa.inspect(conn).has_table(listing_profiles_table.name):
            conn.execute(listing_profiles_table.delete())
    engine.dispose()
    world.sandbox.request_log.clear()
    apply_profile(world.sandbox, profile)
    try:
        options = WRITE_OPTIONS if JOBS[job].writes else {}
        outcome = execute_job(JOBS[job], patient(world.settings), options=options)
    finally:
        clear_profile(world.sandbox)
    return outcome, world.sandbox.request_log.entries()


def store_state(sandbox: SandboxServer) -> list[tuple[Any, ...]]:
    """The test-mode account, without what differs between equal runs (random new ids)."""
    with sandbox.store.lock:
        data = sandbox.store.mode("test")
        return sorted(
            (
                c.email or "",
                c.name or "",
                tuple(sorted(c.metadata.items())),
                c.deleted,
                c.default_payment_method is not None,
            )
            for c in data.customers.values()
        )


def assert_retries_reported(outcome: RunOutcome, entries: list[Any]) -> dict[str, int]:
    faults = fault_counts(entries)
    summary = outcome.summary
    # Every refused request was retried once, and the summary says how often.
    assert summary["retries"] == sum(faults.values()), (summary, faults)
    assert summary["rate_limited"] == faults["rate_limited"]
    return faults


@pytest.mark.parametrize("profile", [p for name, p in PROFILES.items() if name != "none"])
def test_reconcile_under_each_fault_profile_matches_a_fault_free_run(
    sandbox: SandboxServer, tmp_path: Path, profile: FaultProfile
) -> None:
    world = fresh_world(sandbox, tmp_path, "world")
    clean, clean_entries = run_job(world, "reconcile", PROFILES["none"])
    faulty, entries = run_job(world, "reconcile", profile)

    assert findings_key(faulty.findings) == findings_key(clean.findings)
    assert len(faulty.findings) > 0
    faults = assert_retries_reported(faulty, entries)
    assert successful_writes(entries) == []
    if profile.rate_limit_rate or profile.error_rate:
        assert faulty.summary["retries"] > 0
    if profile.name == "429-storm":
        assert faults["rate_limited"] > len(clean_entries) // 4
    assert faulty.exit_code == clean.exit_code == 0


@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_job_under_mixed_faults_ends_as_a_fault_free_run_and_writes_once(
    sandbox: SandboxServer, tmp_path: Path, job: str
) -> None:
    clean_world = fresh_world(sandbox, tmp_path, "clean")
    clean, clean_entries = run_job(clean_world, job, PROFILES["none"])
    clean_state = store_state(sandbox)

    faulty_world = fresh_world(sandbox, tmp_path, "faulty")
    faulty, entries = run_job(faulty_world, job, PROFILES["mixed"])

    assert findings_key(faulty.findings) == findings_key(clean.findings)
    assert_retries_reported(faulty, entries)
    writes = successful_writes(entries)
    assert len(writes) == len(successful_writes(clean_entries))
    # No write carried out twice: each idempotency key succeeded once.
    keys = [key for _, _, key in writes]
    assert len(keys) == len(set(keys))
    assert None not in keys
    creates = [w for w in writes if w[:2] == ("POST", "/v1/customers")]
    assert len(creates) == len(
        [w for w in successful_writes(clean_entries) if w[:2] == ("POST", "/v1/customers")]
    )
    assert store_state(sandbox) == clean_state
    assert faulty.exit_code == clean.exit_code
    assert faulty.summary["status"] == clean.summary["status"]


def test_a_run_beyond_the_retry_budget_fails_and_is_recorded_as_failed(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    world = fresh_world(sandbox, tmp_path, "world")
    sandbox.state.faults.error_rate = 1.0
    settings = patient(world.settings, max_retries=2)
    with pytest.raises(StripeError, match="after 2 retries") as caught:
        execute_job(JOBS["reconcile"], settings)
    assert caught.value.exit_code == EXIT_STRIPE
    store = StateStore(settings.state.url)
    try:
        runs = store.list_runs("reconcile")
    finally:
        store.close()
    assert [run.status for run in runs] == ["failed"]
    assert not (settings.reports.out / "reconcile").exists() or not any(
        (settings.reports.out / "reconcile").iterdir()
    )
    # Each request (one per listing window) was tried 1 + 2 times before the run gave up.
    entries = sandbox.request_log.entries()
    assert entries
    assert {e.status for e in entries} == {500}
    per_request = Counter((e.path, repr(sorted(e.params.items()))) for e in entries)
    assert set(per_request.values()) == {3}
