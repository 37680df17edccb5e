"""This tool's share of Stripe's limits, and slowing down when Stripe refuses (fake clock)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from reconcile.errors import ConfigError
from reconcile.mode import Mode
from reconcile.settings import load_settings
from reconcile.stripe_api.limiter import (
    DECREASE,
    MIN_FACTOR,
    RECOVERY_PER_SECOND,
    RequestLimiter,
    Slowdown,
    buckets_named_by,
    check_limit_share,
)
from tests.gateway.test_limiter import (
    FakeClock,
    everything,
    max_in_any_window,
    rate_between,
    simulate,
)

LIST = "GET /v1/customers"
ONE = "GET /v1/customers/{id}"
SEARCH = "GET /v1/customers/search"


def test_the_share_applies_to_the_global_per_endpoint_and_search_limits() -> None:
    clock = FakeClock()
    limiter = RequestLimiter.for_mode(Mode.LIVE, share=0.8, clock=clock, sleep=clock.sleep)
    assert (limiter.global_limit, limiter.per_endpoint_limit) == (80, 20)
    assert limiter.search_limit == pytest.approx(16)
    # Three endpoints (56/s together): each keeps to its share of its own limit...
    started = simulate(limiter, clock, [LIST] * 20 + [ONE] * 20 + [SEARCH] * 20, seconds=20)
    for endpoint, share_of_limit in ((LIST, 20), (ONE, 20), (SEARCH, 16)):
        assert max_in_any_window(started[endpoint]) <= share_of_limit
        # ...and uses at least 85% of it while work waits.
        assert rate_between(started[endpoint], 1000.0, 1020.0) >= 0.85 * share_of_limit
    # Many endpoints: the global share binds.
    start = clock.now
    many = everything(simulate(limiter, clock, [f"GET /v1/x{i}" for i in range(60)], seconds=20))
    assert max_in_any_window(many) <= 80
    assert rate_between(many, start, start + 20) >= 0.85 * 80


def test_test_mode_at_the_default_share_keeps_to_20_a_second_and_uses_85_percent() -> None:
    clock = FakeClock()
    limiter = RequestLimiter.for_mode(Mode.TEST, share=0.8, clock=clock, sleep=clock.sleep)
    started = simulate(limiter, clock, [LIST, ONE] * 15, seconds=20)
    instants = everything(started)
    assert max_in_any_window(instants) <= 20
    assert rate_between(instants, 1000.0, 1020.0) >= 0.85 * 20


@pytest.mark.parametrize("share", [0.0, -0.5, 1.01, math.nan])
def test_a_share_outside_0_to_1_is_refused(share: float) -> None:
    with pytest.raises(ConfigError, match=r"\[stripe\] limit_share"):
        check_limit_share(share)
    with pytest.raises(ConfigError, match="limit_share"):
        RequestLimiter(25, share=share)


def test_settings_default_share_and_bad_values(tmp_path: Path) -> None:
    env = {"STRIPE_SECRET_KEY": "sk_test_" + "ShareKey0000"}
    assert load_settings(None, env=env).stripe.limit_share == 0.8
    assert load_settings(None, env=env).stripe.limiter_url is None
    for line, named in [
        ("limit_share = 0", "[stripe] limit_share"),
        ("limit_share = 1.5", "[stripe] limit_share"),
        ('limiter_url = "http://redis:6379"', "[stripe] limiter_url"),
    ]:
        config = tmp_path / "c.toml"
        config.write_text(f"[stripe]\n{line}\n")
        with pytest.raises(
            ConfigError,
            match=r"^configuration file .*" + named.replace("[", r"\[").replace("]", r"\]"),
        ) as error:
            load_settings(config, env=env)
        assert error.value.exit_code == 2
        assert "\n" not in error.value.message
    config.write_text('[stripe]\nlimit_share = 1.0\nlimiter_url = "redis://redis:6379/0"\n')
    settings = load_settings(config, env=env)
    assert (settings.stripe.limit_share, settings.stripe.limiter_url) == (
        1.0,
        "redis://redis:6379/0",
    )


@pytest.mark.parametrize(
    ("reason", "endpoint", "buckets"),
    [
        ("global-rate", LIST, ("global",)),
        ("global-concurrency", ONE, ("global",)),
        ("endpoint-rate", LIST, (f"endpoint:{LIST}",)),
        ("endpoint-concurrency", ONE, (f"endpoint:{ONE}",)),
        # Stripe reports the search limit as an endpoint's.
        ("endpoint-rate", SEARCH, (f"endpoint:{SEARCH}", "search")),
        ("search-rate", SEARCH, ("search",)),
        ("search-rate", LIST, ()),  # not a search: nothing to slow
        ("resource-specific", ONE, ()),  # one object busy, not the account
        (None, LIST, ()),  # no header: a lock timeout, not a rate
        ("", LIST, ()),
    ],
)
def test_the_buckets_a_reason_names(
    reason: str | None, endpoint: str, buckets: tuple[str, ...]
) -> None:
    assert buckets_named_by(reason, endpoint) == buckets


def test_slowdown_decreases_once_per_cooldown_and_recovers_additively() -> None:
    first = Slowdown.after_refusal(None, 10.0)
    assert first.factor == DECREASE
    # More refusals of the same overload (requests that were in flight together).
    assert Slowdown.after_refusal(first, 10.5) is first
    second = Slowdown.after_refusal(first, 11.0)
    assert second.factor == pytest.approx((DECREASE + RECOVERY_PER_SECOND) * DECREASE)
    assert second.factor_at(12.0) == pytest.approx(second.factor + RECOVERY_PER_SECOND)
    assert second.factor_at(1000.0) == 1.0
    floor = first
    for n in range(1, 60):
        floor = Slowdown.after_refusal(floor, 10.0 + 1.01 * n)
    # A refusal every second holds it low (where recovery balances the decrease), never
    # below the floor: the run still finishes.
    assert MIN_FACTOR <= floor.factor < 0.15
    assert Slowdown.after_refusal(Slowdown(0.05, 0.0), 1.0).factor == MIN_FACTOR


def test_a_global_refusal_slows_every_endpoint_then_recovers_to_the_share() -> None:
    clock = FakeClock()
    limiter = RequestLimiter.for_mode(Mode.TEST, share=0.8, clock=clock, sleep=clock.sleep)
    workers = [LIST, ONE] * 15
    before = everything(simulate(limiter, clock, workers, seconds=5))
    assert limiter.rate_limited(ONE, "global-rate") == ("global",)
    assert limiter.rate_factor("global") == pytest.approx(DECREASE)
    refused_at = clock.now
    after = everything(simulate(limiter, clock, workers, seconds=2))
    assert rate_between(after, refused_at + 0.2, refused_at + 2) <= DECREASE * 20 + 1.5
    later = everything(simulate(limiter, clock, workers, seconds=20))
    recovered_at = refused_at + 2 + (1 - DECREASE) / RECOVERY_PER_SECOND
    assert limiter.rate_factor("global") == 1.0
    assert rate_between(later, recovered_at + 1, clock.now - 1) >= 0.85 * 20
    # Slowed or recovering, the window bound of the share always holds.
    assert max_in_any_window(before + after + later) <= 20


def test_an_endpoint_refusal_slows_that_endpoint_only() -> None:
    clock = FakeClock()
    limiter = RequestLimiter.for_mode(Mode.LIVE, clock=clock, sleep=clock.sleep)
    assert limiter.rate_limited(LIST, "endpoint-rate") == (f"endpoint:{LIST}",)
    started = simulate(limiter, clock, [LIST] * 20 + [ONE] * 20, seconds=2)
    assert rate_between(started[LIST], 1000.2, 1002) <= DECREASE * 25 + 1.5
    assert rate_between(started[ONE], 1000.2, 1002) >= 0.85 * 25
    assert limiter.rate_factor("global") == 1.0


@pytest.mark.parametrize("reason", [None, "resource-specific"])
def test_a_429_that_is_not_about_the_rate_slows_nothing(reason: str | None) -> None:
    clock = FakeClock()
    limiter = RequestLimiter.for_mode(Mode.TEST, share=0.8, clock=clock, sleep=clock.sleep)
    assert limiter.rate_limited(LIST, reason) == ()
    started = everything(simulate(limiter, clock, [LIST, ONE] * 15, seconds=10))
    assert rate_between(started, 1000.0, 1010.0) >= 0.85 * 20
    assert limiter.rate_factor("global") == limiter.rate_factor(f"endpoint:{LIST}") == 1.0


def test_a_search_refusal_slows_searches_only() -> None:
    clock = FakeClock()
    limiter = RequestLimiter.for_mode(Mode.LIVE, clock=clock, sleep=clock.sleep)
    assert limiter.rate_limited(SEARCH, "search-rate") == ("search",)
    started = simulate(limiter, clock, [SEARCH] * 20 + [LIST] * 20, seconds=2)
    assert rate_between(started[SEARCH], 1000.2, 1002) <= DECREASE * 20 + 1.5
    assert rate_between(started[LIST], 1000.2, 1002) >= 0.85 * 25
