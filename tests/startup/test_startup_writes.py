"""A run's state-database writes before its first request: each one once (issue 16).

Every write is a commit, and a commit waits for the disk: the lease a run has just taken
is held from there, not written a second time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from reconcile.state.store import StateStore

START = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[StateStore]:
    opened = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=clock)
    try:
        yield opened
    finally:
        opened.close()


def _lock_writes(store: StateStore) -> list[str]:
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "stripe_reconcile_locks" in statement and not statement.lstrip().startswith("SELECT"):
            statements.append(statement.split()[0])

    sa.event.listen(store.engine, "before_cursor_execute", seen)
    return statements


def test_a_lease_just_acquired_is_held_without_a_second_write(
    store: StateStore, clock: Clock
) -> None:
    writes = _lock_writes(store)
    assert store.acquire_lock("reconcile", "host:1:run-a", 300)
    clock.now = START + timedelta(seconds=5)
    with store.lease("reconcile", "host:1:run-a", 300, acquired=True) as held:
        holder = store.lock_holder("reconcile")
        assert holder is not None
        assert (holder.owner, holder.acquired_at) == ("host:1:run-a", START)
        assert not held.lost
    assert writes == ["INSERT", "DELETE"]  # the acquire, then the release
    assert store.lock_holder("reconcile") is None


def test_a_lease_not_yet_acquired_is_taken_on_entry(store: StateStore, clock: Clock) -> None:
    writes = _lock_writes(store)
    with store.lease("reconcile", "host:1:run-a", 300):
        holder = store.lock_holder("reconcile")
        assert holder is not None
        assert holder.acquired_at == START
    assert writes == ["INSERT", "DELETE"]
