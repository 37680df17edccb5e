from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from reconcile.errors import ConfigError, LockHeldError
from reconcile.state.store import RunStatus, StateStore

T0 = datetime(2026, 11, 21, 21, 5, 1, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll for something a background thread does; the deadline is only a hang guard."""
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(database_url: str, clock: FakeClock) -> Iterator[StateStore]:
    opened = StateStore(database_url, clock=clock)
    yield opened
    opened.close()


# Runs -------------------------------------------------------------------------------


def test_a_run_goes_from_running_to_succeeded(store: StateStore) -> None:
    started = store.start_run("20261121T210501Z-aaaaaa", "reconcile", mode="test")
    assert started.status is RunStatus.RUNNING
    assert started.started_at == T0
    assert started.started_at.tzinfo is not None
    assert started.finished_at is None

    finished = store.finish_run(
        "20261121T210501Z-aaaaaa",
        "succeeded",
        counts={"orphan_customer": 3},
        requests={"GET /v1/customers": 31},
        report_dir="output/reconcile/20261121T210501Z-aaaaaa",
        finished_at=T0 + timedelta(seconds=42),
    )

    assert finished == store.get_run("20261121T210501Z-aaaaaa")
    assert finished.status is RunStatus.SUCCEEDED
    assert finished.mode == "test"
    assert finished.finished_at == T0 + timedelta(seconds=42)
    assert finished.counts == {"orphan_customer": 3}
    assert finished.requests == {"GET /v1/customers": 31}
    assert finished.report_dir == "output/reconcile/20261121T210501Z-aaaaaa"
    assert finished.error is None


def test_a_failed_run_keeps_its_error_on_one_line(store: StateStore) -> None:
    store.start_run("r1", "reconcile")
    failed = store.finish_run(
        "r1", RunStatus.FAILED, error="user DB unreachable\n  at line 2", requests={}
    )

    assert failed.status is RunStatus.FAILED
    assert failed.error == "user DB unreachable at line 2"
    assert failed.counts == {}


def test_times_in_other_zones_are_stored_as_utc(store: StateStore) -> None:
    paris = timezone(timedelta(hours=1))
    store.start_run("r1", "reconcile", started_at=datetime(2026, 11, 21, 22, 5, 1, tzinfo=paris))

    record = store.get_run("r1")
    assert record is not None
    assert record.started_at == T0
    assert record.started_at.utcoffset() == timedelta(0)


def test_naive_times_are_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="aware"):
        store.start_run("r1", "reconcile", started_at=datetime(2026, 11, 21, 21, 5, 1))


def test_run_ids_are_unique_and_must_exist_to_finish(store: StateStore) -> None:
    store.start_run("r1", "reconcile")

    with pytest.raises(ValueError, match="already recorded"):
        store.start_run("r1", "reconcile")
    with pytest.raises(ValueError, match="not recorded"):
        store.finish_run("r2", "failed")
    with pytest.raises(ValueError, match="final status"):
        store.finish_run("r1", "running")
    assert store.get_run("r2") is None


def test_list_runs_newest_first_by_job_with_a_limit(store: StateStore) -> None:
    for minute, (run_id, job) in enumerate(
        [("a", "reconcile"), ("b", "card-expiry"), ("c", "reconcile"), ("d", "reconcile")]
    ):
        store.start_run(run_id, job, started_at=T0 + timedelta(minutes=minute))

    assert [r.run_id for r in store.list_runs()] == ["d", "c", "b", "a"]
    assert [r.run_id for r in store.list_runs(job="reconcile")] == ["d", "c", "a"]
    assert [r.run_id for r in store.list_runs(job="reconcile", limit=2)] == ["d", "c"]
    assert store.list_runs(job="dedupe") == []


# Locks ------------------------------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["upsert", "portable"])
def lock_store(
    request: pytest.FixtureRequest, database_url: str, clock: FakeClock
) -> Iterator[StateStore]:
    """Both ways of taking a lock: the one-statement upsert and the portable fallback."""
    opened = StateStore(database_url, clock=clock, atomic_upsert=request.param)
    yield opened
    opened.close()


def test_a_held_lock_refuses_others_until_it_expires(
    lock_store: StateStore, clock: FakeClock
) -> None:
    assert lock_store.acquire_lock("reconcile", "run-a", 60)
    assert not lock_store.acquire_lock("reconcile", "run-b", 60)
    assert lock_store.acquire_lock("card-expiry", "run-b", 60)  # another job, another lock

    clock.advance(59)
    assert not lock_store.acquire_lock("reconcile", "run-b", 60)

    clock.advance(1)
    assert lock_store.acquire_lock("reconcile", "run-b", 60)
    holder = lock_store.lock_holder("reconcile")
    assert holder is not None
    assert holder.owner == "run-b"
    assert holder.acquired_at == T0 + timedelta(seconds=60)
    assert holder.expires_at == T0 + timedelta(seconds=120)
    assert not lock_store.renew_lock("reconcile", "run-a", 60)  # run-a lost it


def test_the_owner_may_take_its_own_lock_again(lock_store: StateStore) -> None:
    assert lock_store.acquire_lock("reconcile", "run-a", 60)
    assert lock_store.acquire_lock("reconcile", "run-a", 60)


def test_renewal_pushes_the_expiry(lock_store: StateStore, clock: FakeClock) -> None:
    assert lock_store.acquire_lock("reconcile", "run-a", 60)
    clock.advance(50)

    assert lock_store.renew_lock("reconcile", "run-a", 60)
    assert not lock_store.renew_lock("reconcile", "run-b", 60)

    clock.advance(50)  # past the first expiry, within the renewed one
    assert not lock_store.acquire_lock("reconcile", "run-b", 60)
    holder = lock_store.lock_holder("reconcile")
    assert holder is not None
    assert holder.expires_at == T0 + timedelta(seconds=110)


def test_release_frees_the_lock_for_its_owner_only(lock_store: StateStore) -> None:
    assert lock_store.acquire_lock("reconcile", "run-a", 60)

    assert not lock_store.release_lock("reconcile", "run-b")
    assert not lock_store.acquire_lock("reconcile", "run-b", 60)
    assert lock_store.release_lock("reconcile", "run-a")
    assert lock_store.lock_holder("reconcile") is None
    assert lock_store.acquire_lock("reconcile", "run-b", 60)


def _race(stores: list[StateStore], job: str, contenders: int) -> list[str]:
    """Every contender tries to take `job` at the same instant; returns the winners."""
    start = threading.Barrier(contenders)
    winners: list[str] = []
    errors: list[BaseException] = []

    def contend(index: int) -> None:
        store = stores[index % len(stores)]
        owner = f"run-{index}"
        try:
            start.wait()
            if store.acquire_lock(job, owner, 60):
                winners.append(owner)
        except BaseException as exc:  # surfaced below, so a crash cannot pass for a loss
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return winners


@pytest.mark.parametrize("atomic_upsert", [True, False], ids=["upsert", "portable"])
def test_concurrent_acquirers_on_two_engines_never_both_win(
    database_url: str, clock: FakeClock, atomic_upsert: bool
) -> None:
    stores = [
        StateStore(database_url, clock=clock, atomic_upsert=atomic_upsert) for _ in range(2)
    ]
    try:
        for round_number in range(10):
            job = f"job-{round_number}"
            # A free lock, then an expired one taken over by a crowd.
            assert len(_race(stores, job, 6)) == 1
            clock.advance(61)
            assert len(_race(stores, job, 6)) == 1
    finally:
        for store in stores:
            store.close()


# The lease context manager ----------------------------------------------------------


def test_lease_holds_then_releases(store: StateStore) -> None:
    with store.lease("reconcile", "host:1:run-a", 300) as held:
        assert not held.lost
        holder = store.lock_holder("reconcile")
        assert holder is not None
        assert holder.owner == "host:1:run-a"
    assert store.lock_holder("reconcile") is None


def test_lease_is_released_when_the_block_fails(store: StateStore) -> None:
    with pytest.raises(RuntimeError, match="job blew up"), store.lease("reconcile", "a", 300):
        raise RuntimeError("job blew up")
    assert store.lock_holder("reconcile") is None


def test_a_second_lease_is_refused_with_the_holder_and_expiry(
    store: StateStore, database_url: str, clock: FakeClock
) -> None:
    other = StateStore(database_url, clock=clock)
    try:
        with store.lease("reconcile", "host:1:20261121T210501Z-aaaaaa", 300):
            with (
                pytest.raises(LockHeldError) as caught,
                other.lease("reconcile", "host:2:20261121T210502Z-bbbbbb", 300),
            ):
                pytest.fail("the second lease must not be granted")
            message = caught.value.message
            assert caught.value.exit_code == 5
            assert "\n" not in message
            assert message.startswith("another reconcile run (host:1:20261121T210501Z-aaaaaa")
            assert "started 2026-11-21 21:05:01 UTC" in message
            assert "the lease expires at 2026-11-21 21:10:01 UTC" in message
            # The refused run did not disturb the holder.
            holder = store.lock_holder("reconcile")
            assert holder is not None
            assert holder.owner == "host:1:20261121T210501Z-aaaaaa"
    finally:
        other.close()


def test_lease_renews_in_the_background(store: StateStore, clock: FakeClock) -> None:
    with store.lease("reconcile", "run-a", 300, renew_every=0.01) as held:
        clock.advance(200)
        # The renewal counts itself just after its write: wait for both.
        wait_until(
            lambda: (h := store.lock_holder("reconcile")) is not None
            and h.expires_at == T0 + timedelta(seconds=500)
            and held.renewals >= 1,
            "a renewal at the advanced clock",
        )
        clock.advance(200)  # past the original expiry: the renewed lease still holds
        assert not store.acquire_lock("reconcile", "run-b", 300)
        assert not held.lost


def test_leaving_a_taken_over_lease_leaves_the_new_holder_alone(
    store: StateStore, database_url: str, clock: FakeClock
) -> None:
    other = StateStore(database_url, clock=clock)
    try:
        with store.lease("reconcile", "run-a", 60, renew_every=3600):
            clock.advance(61)  # run-a stalled past its expiry, and run-b took over
            assert other.acquire_lock("reconcile", "run-b", 60)
        holder = store.lock_holder("reconcile")
        assert holder is not None
        assert holder.owner == "run-b"
    finally:
        other.close()


def test_the_renewer_notices_a_takeover(
    store: StateStore, database_url: str, clock: FakeClock
) -> None:
    other = StateStore(database_url, clock=clock)
    try:
        with store.lease("reconcile", "run-a", 60, renew_every=0.01) as held:
            # Take the lease over directly, as a run would after run-a's lease expired.
            with other.engine.begin() as conn:
                conn.execute(sa.text("update stripe_reconcile_locks set owner = 'run-b'"))
            wait_until(lambda: held.lost, "the renewer to notice the takeover")
            with pytest.raises(LockHeldError, match="taken over"):
                held.check()
        holder = store.lock_holder("reconcile")
        assert holder is not None
        assert holder.owner == "run-b"
    finally:
        other.close()


# Opening the store ------------------------------------------------------------------


def test_tables_are_the_stores_own_and_users_tables_are_untouched(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table runs (id integer primary key, note varchar(20))"))
        conn.execute(sa.text("create table locks (name varchar(20))"))
        conn.execute(sa.text("insert into runs values (1, 'theirs')"))

    store = StateStore(database_url)
    try:
        store.start_run("r1", "reconcile")
        assert store.acquire_lock("reconcile", "run-a", 60)
    finally:
        store.close()

    tables = set(sa.inspect(engine).get_table_names())
    assert {"stripe_reconcile_runs", "stripe_reconcile_locks", "runs", "locks"} <= tables
    with engine.connect() as conn:
        assert conn.execute(sa.text("select id, note from runs")).all() == [(1, "theirs")]
        assert conn.execute(sa.text("select count(*) from locks")).scalar_one() == 0
    engine.dispose()


def test_reopening_keeps_the_records(database_url: str) -> None:
    first = StateStore(database_url)
    first.start_run("r1", "reconcile")
    first.close()

    second = StateStore(database_url)
    try:
        assert [r.run_id for r in second.list_runs()] == ["r1"]
    finally:
        second.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://reconcile:s3cretpw@127.0.0.1:1/state",
        "sqlite:////nonexistent-folder/for/state.db",
    ],
    ids=["closed-port", "missing-folder"],
)
def test_an_unreachable_state_db_is_one_config_line_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        StateStore(url)

    message = caught.value.message
    assert message.startswith("[state] url ")
    assert "cannot be opened" in message
    assert "\n" not in message
    assert "s3cretpw" not in message
    assert caught.value.exit_code == 2


def test_an_invalid_state_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^\[state\] url .*not a usable SQLAlchemy URL"):
        StateStore("nosuchdb://x")
