"""429s above each limit, counted in sliding one-second windows (with a hand-moved clock)."""

from __future__ import annotations

import pytest
import stripe

from sandbox.ratelimit import RateLimits, SlidingWindowLimiter
from sandbox.runner import SandboxServer
from tests.sandbox.conftest import LIVE_KEY, FakeClock, Raw


@pytest.fixture
def clock(sandbox: SandboxServer) -> FakeClock:
    fake = FakeClock()
    sandbox.state.limiter = SlidingWindowLimiter(clock=fake)
    return fake


def _statuses(
    raw: Raw, count: int, path: str = "/v1/customers", key: str | None = None
) -> list[int]:
    kwargs = {"key": key} if key else {}
    return [raw("GET", path, **kwargs).status_code for _ in range(count)]


def test_429_body_and_headers_match_stripe(
    raw: Raw, sandbox: SandboxServer, clock: FakeClock
) -> None:
    sandbox.limits = RateLimits(test_global=1)
    assert raw("GET", "/v1/customers").status_code == 200
    refused = raw("GET", "/v1/customers")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "rate_limit")
    assert "rate limit" in error["message"].lower()
    assert "Stripe-Should-Retry" not in refused.headers  # Stripe asks no retry of real limits
    assert refused.headers["Sandbox-Rate-Limited-Reason"] == "global-rate"
    assert refused.headers["Stripe-Rate-Limited-Reason"] == "global-rate"
    assert refused.headers["Request-Id"].startswith("req_")


def test_sdk_raises_rate_limit_error(
    client: stripe.StripeClient, sandbox: SandboxServer, clock: FakeClock
) -> None:
    sandbox.limits = RateLimits(test_global=2)
    client.v1.customers.list({})
    client.v1.customers.list({})
    with pytest.raises(stripe.RateLimitError):
        client.v1.customers.list({})


def test_global_limit_per_mode_with_a_sliding_window(
    raw: Raw, sandbox: SandboxServer, clock: FakeClock
) -> None:
    sandbox.limits = RateLimits(test_global=5, live_global=8, per_endpoint=1000, search=1000)
    assert _statuses(raw, 6) == [200] * 5 + [429]
    assert _statuses(raw, 9, key=LIVE_KEY) == [200] * 8 + [429]  # live counts separately
    clock.advance(0.5)
    assert _statuses(raw, 1) == [429]  # the first five are still inside the window
    clock.advance(0.51)
    assert _statuses(raw, 6) == [200] * 5 + [429]


def test_refused_requests_do_not_use_up_the_window(
    raw: Raw, sandbox: SandboxServer, clock: FakeClock
) -> None:
    sandbox.limits = RateLimits(test_global=2)
    assert _statuses(raw, 10) == [200, 200] + [429] * 8
    clock.advance(1.01)
    assert _statuses(raw, 3) == [200, 200, 429]


def test_per_endpoint_limit_counts_each_route_template(
    raw: Raw, sandbox: SandboxServer, clock: FakeClock, client: stripe.StripeClient
) -> None:
    first, second = client.v1.customers.create({}), client.v1.customers.create({})
    sandbox.limits = RateLimits(test_global=100, per_endpoint=3)
    # Different ids share the endpoint `GET /v1/customers/{id}`.
    statuses = [raw("GET", f"/v1/customers/{cid}").status_code for cid in (first.id, second.id) * 2]
    assert statuses == [200, 200, 200, 429]
    refused = raw("GET", f"/v1/customers/{first.id}")
    assert refused.headers["Sandbox-Rate-Limited-Reason"] == "endpoint-rate"
    assert refused.headers["Stripe-Rate-Limited-Reason"] == "endpoint-rate"
    assert _statuses(raw, 3) == [200, 200, 200]  # the list endpoint has its own window


def test_search_has_its_own_tighter_limit(
    raw: Raw, sandbox: SandboxServer, clock: FakeClock
) -> None:
    sandbox.limits = RateLimits(test_global=100, per_endpoint=100, search=4)
    searches = [
        raw("GET", "/v1/customers/search", params={"query": 'email:"a@example.com"'})
        for _ in range(5)
    ]
    assert [r.status_code for r in searches] == [200] * 4 + [429]
    assert searches[-1].headers["Sandbox-Rate-Limited-Reason"] == "search-rate"
    # Stripe reports search's own limit as an endpoint's.
    assert searches[-1].headers["Stripe-Rate-Limited-Reason"] == "endpoint-rate"
    assert _statuses(raw, 1) == [200]


def test_limits_can_be_changed_and_switched_off_at_runtime(
    raw: Raw, sandbox: SandboxServer, clock: FakeClock
) -> None:
    sandbox.limits = RateLimits(test_global=1)
    assert _statuses(raw, 2) == [200, 429]
    sandbox.limits.enabled = False
    assert _statuses(raw, 30) == [200] * 30
    sandbox.limits = RateLimits().scaled(10)
    assert sandbox.limits.test_global == 250
    assert _statuses(raw, 30) == [200] * 30


def test_admin_routes_are_never_limited(raw: Raw, sandbox: SandboxServer, clock: FakeClock) -> None:
    sandbox.limits = RateLimits(test_global=0, per_endpoint=0)
    assert [raw("GET", "/_sandbox/health").status_code for _ in range(5)] == [200] * 5


def test_limiter_never_admits_more_than_the_limit_in_any_window() -> None:
    clock = FakeClock(0.0)
    limiter = SlidingWindowLimiter(clock=clock)
    admitted: list[float] = []
    for step in range(2_000):  # 2,000 attempts at 1 ms apart: far above a 25/s limit
        clock.now = step / 1000
        if limiter.try_acquire([("global-rate", "test global", 25)]) is None:
            admitted.append(clock.now)
    for index, start in enumerate(admitted):
        in_window = [t for t in admitted[index:] if t < start + 1.0]
        assert len(in_window) <= 25
    assert len(admitted) == 50  # and it does admit the full limit each second
