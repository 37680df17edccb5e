"""The limiter shared through Redis: the Lua reservation's window bound, its agreement with
the in-process limiter, slowdowns seen by every process, and a Redis that is not there.

Against the real Redis at 127.0.0.1:6379 (STRIPE_RECONCILE_TEST_REDIS_URL to change it);
skipped, with the reason, when it does not answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from reconcile.errors import EXIT_STRIPE
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter import DECREASE, RECOVERY_PER_SECOND, SAFETY, RequestLimiter
from reconcile.stripe_api.limiter_redis import (
    KEY_TTL_MS,
    LimiterUnavailableError,
    RedisRequestLimiter,
    connect,
)
from reconcile.stripe_api.limiter_registry import clear_shared_limiters, shared_limiter
from tests.gateway.test_limiter import FakeClock, max_in_any_window

REDIS_URL = os.environ.get("STRIPE_RECONCILE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LIST = "GET /v1/customers"
ONE = "GET /v1/customers/{id}"
SEARCH = "GET /v1/customers/search"
KEY = "sk_test_" + "RedisLimiterKey0001"


def redis_or_skip() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL} ({type(exc).__name__}): start it")
    return client


def forget_namespace(client: redis.Redis, namespace: str) -> None:
    for key in client.scan_iter(match=f"stripe-reconcile:limiter:{{{namespace}}}:*"):
        client.delete(key)


@pytest.fixture
def client() -> redis.Redis:
    return redis_or_skip()


@pytest.fixture
def namespace(client: redis.Redis) -> Iterator[str]:
    name = f"tests-{uuid.uuid4().hex[:12]}:test"
    yield name
    forget_namespace(client, name)


def limiter_in(namespace: str, limit: float, **kwargs: float) -> RedisRequestLimiter:
    """A limiter with a connection of its own, as another process would have."""
    return RedisRequestLimiter(redis.Redis.from_url(REDIS_URL), namespace, limit, **kwargs)


def test_four_processes_reserving_at_once_keep_every_window_within_each_limit(
    namespace: str,
) -> None:
    limiters = [limiter_in(namespace, 25) for _ in range(4)]
    reserved: list[tuple[str, float]] = []
    guard = threading.Lock()

    def worker(limiter: RedisRequestLimiter, endpoints: list[str]) -> None:
        for endpoint in endpoints:
            instant, _ = limiter.reserve_shared(endpoint)
            with guard:
                reserved.append((endpoint, instant))

    threads = [
        threading.Thread(target=worker, args=(limiters[i % 4], [(LIST, ONE, SEARCH)[i % 3]] * 25))
        for i in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    instants = sorted(instant for _, instant in reserved)
    assert len(instants) == 300
    assert max_in_any_window(instants) <= 25
    for endpoint, limit in ((LIST, 25), (ONE, 25), (SEARCH, 20)):
        assert max_in_any_window([t for e, t in reserved if e == endpoint]) <= limit
    # The schedule is tight too: the GCRA's sustained rate, about 91% of 25/s.
    assert (len(instants) - 1) / (instants[-1] - instants[0]) >= 0.88 * 25


def test_the_lua_reservation_matches_the_in_process_limiter(namespace: str) -> None:
    """The same requests at (nearly) the same instant get the same schedule: a busy
    endpoint queued ahead, and another endpoint slipping into the global gaps."""
    sequence = [LIST] * 40 + [ONE] * 5 + [SEARCH] * 25
    clock = FakeClock()
    local = RequestLimiter(100, clock=clock, sleep=clock.sleep)
    expected = [local.reserve(endpoint) - clock.now for endpoint in sequence]
    shared = limiter_in(namespace, 100)
    started = time.monotonic()
    got = [shared.reserve_shared(endpoint) for endpoint in sequence]
    elapsed = time.monotonic() - started
    first = got[0][0]
    offsets = [instant - first for instant, _ in got]
    # Redis's clock moved on while the requests were sent one by one: that much apart.
    assert all(abs(o - e) <= elapsed + 1e-3 for o, e in zip(offsets, expected, strict=True))
    assert offsets[39] > 1.4  # forty on one endpoint at 25/s
    assert offsets[40] <= elapsed + (1 + SAFETY) / 99  # another endpoint: in the gaps


def test_a_refusal_slows_the_bucket_for_every_process_and_only_once_per_overload(
    namespace: str,
) -> None:
    one, other = limiter_in(namespace, 25), limiter_in(namespace, 25)
    assert one.rate_limited(LIST, "global-rate") == ("global",)
    assert one.rate_limited(ONE, "global-concurrency") == ("global",)  # the same overload
    assert DECREASE <= other.rate_factor("global") <= DECREASE + 2 * RECOVERY_PER_SECOND
    assert other.rate_factor(f"endpoint:{LIST}") == 1.0
    instants = [other.reserve_shared(ONE)[0] for _ in range(40)]
    rate = (len(instants) - 1) / (instants[-1] - instants[0])
    assert rate <= DECREASE * 25 + 1
    # No header (a lock timeout) or a busy object: not the rate, nothing slows further.
    assert other.rate_limited(LIST, None) == ()
    assert other.rate_limited(LIST, "resource-specific") == ()
    assert one.rate_factor("global") <= DECREASE + 2 * RECOVERY_PER_SECOND
    assert one.rate_limited(LIST, "endpoint-rate") == (f"endpoint:{LIST}",)
    factor = other.rate_factor(f"endpoint:{LIST}")
    assert DECREASE <= factor <= DECREASE + 2 * RECOVERY_PER_SECOND


def test_the_limiter_keys_expire_when_idle(client: redis.Redis, namespace: str) -> None:
    limiter = limiter_in(namespace, 25)
    limiter.reserve_shared(LIST)
    limiter.rate_limited(LIST, "global-rate")
    keys = list(client.scan_iter(match=f"stripe-reconcile:limiter:{{{namespace}}}:*"))
    # The reservations of both buckets, the global slowdown, the sequence.
    assert len(keys) == 4
    assert all(0 < client.pttl(key) <= KEY_TTL_MS + 1000 for key in keys)


def test_waiting_counts_reservations_of_every_process(namespace: str) -> None:
    one, other = limiter_in(namespace, 25), limiter_in(namespace, 25)
    for _ in range(10):
        one.reserve_shared(LIST)
    assert other.waiting(LIST) >= 10 - 2 - 1  # all but the burst (and one due by now)
    assert other.waiting(ONE) == other.waiting(LIST)  # through the global bucket


def test_an_unreachable_redis_is_one_line_and_exit_3_without_the_password() -> None:
    with pytest.raises(LimiterUnavailableError) as error:
        connect("redis://:s3cret-pass@127.0.0.1:1/0")
    message = error.value.message
    assert error.value.exit_code == EXIT_STRIPE == 3
    assert "s3cret" not in message
    assert "\n" not in message
    assert message.startswith("[stripe] limiter_url redis://127.0.0.1:1/0 cannot be reached (")
    assert "start Redis there or fix the URL" in message


def test_the_registry_gives_one_redis_limiter_per_account_and_refuses_a_dead_url(
    client: redis.Redis,
) -> None:
    clear_shared_limiters()
    base = f"http://127.0.0.1:9/{uuid.uuid4().hex}"
    made = shared_limiter(KEY, api_base=base, limiter_url=REDIS_URL)
    try:
        assert isinstance(made, RedisRequestLimiter)
        assert shared_limiter(KEY, api_base=base, limiter_url=REDIS_URL) is made
        assert (made.global_limit, made.share) == (25 * 0.8, 0.8)
        local = shared_limiter(KEY, api_base=base)
        assert local is not made
        assert not isinstance(local, RedisRequestLimiter)
        with pytest.raises(LimiterUnavailableError):
            shared_limiter(KEY, api_base=base, limiter_url="redis://127.0.0.1:1/0")
    finally:
        clear_shared_limiters()


def test_redis_lost_during_a_run_stops_it_with_exit_3_before_sending() -> None:
    """Sending without the shared budget could exceed the account's: the run stops."""
    gone = RedisRequestLimiter(
        redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1), "gone:test", 25
    )
    gateway = StripeGateway(KEY, api_base="http://127.0.0.1:9", limiter=gone)
    with pytest.raises(LimiterUnavailableError) as error:
        list(gateway.customers_list())
    assert error.value.exit_code == 3
    assert gateway.stats.total == 0  # nothing was sent


def test_run_with_an_unreachable_limiter_url_exits_3_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[stripe]\nlimiter_url = "redis://:s3cret-pass@127.0.0.1:1/0"\n'
        f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n'
        f'[reports]\nout = "{tmp_path / "out"}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE")}
    env.update({"STRIPE_SECRET_KEY": KEY, "STRIPE_API_BASE": "http://127.0.0.1:9"})
    script = Path(sys.executable).with_name("stripe-reconcile")
    done = subprocess.run(
        [str(script), "run", "reconcile", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "[stripe] limiter_url redis://127.0.0.1:1/0 cannot be reached" in lines[0]
    assert "s3cret" not in done.stderr + done.stdout
