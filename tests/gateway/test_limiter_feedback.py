"""Stripe's 429s reach the limiter: the bucket named by `Stripe-Rate-Limited-Reason` slows.

Over real HTTP to the sandbox. The first tests refuse chosen requests in the client's
HTTP layer (a failure, as Stripe would send it) so each reason is checked exactly; the last
lets the sandbox's own rate limits refuse, with the reason it sends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import stripe

from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter import DECREASE, RECOVERY_PER_SECOND, RequestLimiter
from reconcile.stripe_api.retry import RetryPolicy
from sandbox.runner import RateLimits, SandboxConfig, SandboxServer

KEY = "sk_test_" + "FeedbackKey000001"
RATE_LIMIT_BODY = json.dumps(
    {"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many"}}
)


class RefusingClient(stripe.RequestsClient):
    """Real HTTP, except that the next requests are answered 429 with the given headers."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals: list[dict[str, str]] = []

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        if self.refusals:
            return RATE_LIMIT_BODY.encode(), 429, self.refusals.pop(0)
        return super().request(method, url, headers, post_data)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(limits=RateLimits(enabled=False))) as sandbox:
        yield sandbox


def gateway_for(server: SandboxServer, http: stripe.HTTPClient | None = None) -> StripeGateway:
    return StripeGateway(
        KEY,
        api_base=server.url,
        limiter=RequestLimiter(25, share=0.8),
        http_client=http,
        policy=RetryPolicy(max_retries=3, initial_delay=0.01, max_delay=0.02),
    )


@pytest.mark.parametrize(
    ("headers", "slowed", "untouched"),
    [
        ({"Stripe-Rate-Limited-Reason": "global-rate"}, "global", "endpoint:GET /v1/customers"),
        ({"stripe-rate-limited-reason": "global-concurrency"}, "global", "search"),
        (
            {"Stripe-Rate-Limited-Reason": "endpoint-rate"},
            "endpoint:GET /v1/customers",
            "global",
        ),
        (
            {"Stripe-Rate-Limited-Reason": "endpoint-concurrency"},
            "endpoint:GET /v1/customers",
            "global",
        ),
    ],
)
def test_a_429_with_a_reason_slows_the_bucket_it_names(
    server: SandboxServer, headers: dict[str, str], slowed: str, untouched: str
) -> None:
    http = RefusingClient()
    http.refusals.append(headers)
    gateway = gateway_for(server, http)
    assert list(gateway.customers_list()) == []  # retried after the 429, then answered
    assert gateway.stats.rate_limited == 1
    # Decreased, and recovering since (a loaded machine may take a second or two).
    assert DECREASE <= gateway.limiter.rate_factor(slowed) <= DECREASE + 2 * RECOVERY_PER_SECOND
    assert gateway.limiter.rate_factor(untouched) == 1.0


@pytest.mark.parametrize(
    "headers",
    [{}, {"Stripe-Should-Retry": "true"}, {"Stripe-Rate-Limited-Reason": "resource-specific"}],
)
def test_a_429_that_is_not_about_the_rate_slows_nothing(
    server: SandboxServer, headers: dict[str, str]
) -> None:
    http = RefusingClient()
    http.refusals.append(headers)
    gateway = gateway_for(server, http)
    assert list(gateway.customers_list()) == []
    assert gateway.stats.rate_limited == 1
    for bucket in ("global", "endpoint:GET /v1/customers", "search"):
        assert gateway.limiter.rate_factor(bucket) == 1.0


def test_the_sandboxs_own_refusals_slow_a_client_that_sends_too_fast() -> None:
    """A client sure of 25/s against an account already busy at 10/s: Stripe's refusals
    slow its global bucket; the requests still all get through."""
    limits = RateLimits(test_global=10)
    with SandboxServer(SandboxConfig(limits=limits)) as sandbox:
        probe = stripe.RequestsClient()
        answers = [
            probe.request("get", f"{sandbox.url}/v1/customers", {"Authorization": f"Bearer {KEY}"})
            for _ in range(15)
        ]
        refused = [headers for _, status, headers in answers if status == 429]
        assert refused, "the sandbox's limits are on"
        if "Stripe-Rate-Limited-Reason" not in refused[0]:
            pytest.skip("the sandbox does not send Stripe-Rate-Limited-Reason on its 429s yet")
        sandbox.state.limiter.clear()
        gateway = StripeGateway(
            KEY,
            api_base=sandbox.url,
            limiter=RequestLimiter(25),
            policy=RetryPolicy(max_retries=8, initial_delay=0.05, max_delay=0.4),
        )
        for _ in range(60):
            assert list(gateway.customers_list(page_size=1)) == []
        assert gateway.stats.rate_limited > 0
        assert gateway.limiter.rate_factor("global") < 1.0
