"""Which earlier run a new run may resume: failed or interrupted, young, and of the same mode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconcile.listing.resume import resumable_run
from reconcile.state.store import StateStore

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> StateStore:
    return StateStore(database_url)


def previous_run(store: StateStore, status: str, mode: str, *, at: datetime = T0) -> None:
    store.start_run("run-1", "reconcile", mode=mode, started_at=at)
    store.finish_run("run-1", status, finished_at=at + timedelta(minutes=1))


@pytest.mark.parametrize("status", ["failed", "interrupted"])
def test_a_failed_run_of_the_same_mode_is_resumed(store: StateStore, status: str) -> None:
    previous_run(store, status, "test")
    found = resumable_run(store, "reconcile", "run-2", now=T0, max_age=None, mode="test")
    assert found is not None
    assert found.run_id == "run-1"


def test_a_run_of_the_other_mode_is_never_resumed(store: StateStore) -> None:
    previous_run(store, "failed", "live")
    assert resumable_run(store, "reconcile", "run-2", now=T0, max_age=None, mode="test") is None


def test_a_succeeded_or_old_run_is_not_resumed(store: StateStore) -> None:
    previous_run(store, "succeeded", "test")
    assert resumable_run(store, "reconcile", "run-2", now=T0, max_age=None, mode="test") is None


def test_a_failed_run_older_than_the_limit_is_not_resumed(store: StateStore) -> None:
    previous_run(store, "failed", "test", at=T0 - timedelta(hours=30))
    found = resumable_run(
        store, "reconcile", "run-2", now=T0, max_age=timedelta(hours=24), mode="test"
    )
    assert found is None
