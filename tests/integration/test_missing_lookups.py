"""Looking up the customers a listing lacks: at once, unless the key may be of the wrong mode."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobs.base import JobContext
from jobs.reconcile_job import WRONG_MODE_SAMPLE, classify_missing
from jobs.runner import build_gateway
from reconcile.state.store import StateStore
from reconcile.userdb import UserDB
from tests.seeded import SeededWorld

# Long enough that the limiter sends a dozen requests well within one answer's latency.
LATENCY_S = 1.0
IDS = [f"cus_NeverExisted{n:04d}" for n in range(WRONG_MODE_SAMPLE + 2)]


@pytest.fixture
def ctx(world: SeededWorld, tmp_path: Path) -> Iterator[JobContext]:
    settings = world.settings
    state = StateStore(settings.state.url)
    userdb = UserDB(settings.userdb)
    world.sandbox.latency_ms = LATENCY_S * 1000
    try:
        yield JobContext(
            settings=settings,
            gateway=build_gateway(settings),
            userdb=userdb,
            state=state,
            run_id="lookups",
            started_at=datetime.now(UTC),
            out_dir=tmp_path,
        )
    finally:
        world.sandbox.latency_ms = 0
        userdb.close()
        state.close()


def _arrivals(world: SeededWorld) -> list[float]:
    return sorted(
        e.time
        for e in world.sandbox.request_log.entries()
        if e.method == "GET" and e.path.startswith("/v1/customers/cus_NeverExisted")
    )


def test_few_missing_ids_are_looked_up_at_once(world: SeededWorld, ctx: JobContext) -> None:
    world.sandbox.request_log.clear()
    # A dozen missing among many linked users cannot mean a key of the wrong mode.
    causes, late = classify_missing(ctx, IDS, linked_users=1_000)
    assert causes == dict.fromkeys(IDS, "absent")
    assert late == []
    arrivals = _arrivals(world)
    assert len(arrivals) == len(IDS)
    # Every request left before the first answer came back: none waited for a sample.
    assert arrivals[-1] - arrivals[0] < LATENCY_S


def test_a_sample_goes_first_when_the_key_may_be_of_the_wrong_mode(
    world: SeededWorld, ctx: JobContext
) -> None:
    world.sandbox.request_log.clear()
    # Most linked users' customers missing: the sample is judged before the rest is sent.
    causes, _late = classify_missing(ctx, IDS, linked_users=len(IDS))
    assert causes == dict.fromkeys(IDS, "absent")
    arrivals = _arrivals(world)
    assert len(arrivals) == len(IDS)
    assert arrivals[WRONG_MODE_SAMPLE] - arrivals[WRONG_MODE_SAMPLE - 1] >= LATENCY_S * 0.9
