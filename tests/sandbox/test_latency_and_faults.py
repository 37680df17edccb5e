"""Latency that overlaps instead of queueing, and injected faults (random and scripted)."""

from __future__ import annotations

import threading

import pytest
import requests
import stripe

from sandbox.runner import SandboxServer
from tests.sandbox.conftest import TEST_KEY, Raw, make_client


def test_latency_does_not_serialize_concurrent_requests(sandbox: SandboxServer) -> None:
    sandbox.latency_ms = 1_000  # long enough that every thread arrives while others wait
    sandbox.jitter_ms = 50
    workers = 8
    barrier = threading.Barrier(workers)
    statuses: list[int] = []

    def fetch() -> None:
        barrier.wait()
        response = requests.get(
            sandbox.url + "/v1/customers",
            headers={"Authorization": f"Bearer {TEST_KEY}"},
            timeout=30,
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=fetch) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * workers
    # All eight were waiting out their latency at the same time.
    assert sandbox.state.max_in_flight == workers


def test_latency_is_settable_and_applies_to_each_response(sandbox: SandboxServer) -> None:
    sandbox.latency_ms, sandbox.jitter_ms = 20, 10
    delays = {sandbox.state.delay_seconds() for _ in range(50)}
    assert all(0.020 <= delay <= 0.030 for delay in delays)
    assert len(delays) > 1  # jitter varies it


def test_fail_next_fails_exactly_that_many_requests(raw: Raw, sandbox: SandboxServer) -> None:
    sandbox.faults.fail_next("GET", "/v1/customers", 3)
    statuses = [raw("GET", "/v1/customers").status_code for _ in range(5)]
    assert statuses == [500, 500, 500, 200, 200]
    error = raw("GET", "/v1/customers/cus_x").json()["error"]  # other paths unaffected
    assert error["code"] == "resource_missing"


def test_fail_next_matches_a_route_template_and_other_statuses(
    raw: Raw, client: stripe.StripeClient, sandbox: SandboxServer
) -> None:
    customer = client.v1.customers.create({})
    sandbox.faults.fail_next("POST", "/v1/customers/{id}", 1, status=503)
    failed = raw("POST", f"/v1/customers/{customer.id}", data={"name": "x"})
    assert failed.status_code == 503
    assert failed.json()["error"]["type"] == "api_error"
    assert raw("POST", f"/v1/customers/{customer.id}", data={"name": "x"}).status_code == 200


def test_sdk_retries_an_injected_500(sandbox: SandboxServer) -> None:
    sandbox.faults.fail_next("GET", "/v1/customers", 1)
    client = make_client(sandbox, retries=1)
    assert client.v1.customers.list({}).data == []
    assert [e.status for e in sandbox.request_log.entries()] == [500, 200]


def test_dropped_connection(raw: Raw, sandbox: SandboxServer) -> None:
    sandbox.faults.drop_next("GET", "/v1/customers", 1)
    with pytest.raises(requests.ConnectionError):
        raw("GET", "/v1/customers")
    assert raw("GET", "/v1/customers").status_code == 200
    assert [e.status for e in sandbox.request_log.entries()] == [0, 200]


def test_sdk_sees_a_dropped_connection_as_a_connection_error(sandbox: SandboxServer) -> None:
    sandbox.faults.drop_rate = 1.0
    with pytest.raises(stripe.APIConnectionError):
        make_client(sandbox).v1.customers.list({})


@pytest.mark.parametrize(("attribute", "status"), [("error_rate", 500), ("rate_limit_rate", 429)])
def test_fault_probabilities(raw: Raw, sandbox: SandboxServer, attribute: str, status: int) -> None:
    setattr(sandbox.faults, attribute, 1.0)
    assert [raw("GET", "/v1/customers").status_code for _ in range(5)] == [status] * 5
    setattr(sandbox.faults, attribute, 0.0)
    assert raw("GET", "/v1/customers").status_code == 200


def test_a_partial_fault_rate_fails_some_requests_not_all(raw: Raw, sandbox: SandboxServer) -> None:
    sandbox.faults.error_rate = 0.5
    statuses = {raw("GET", "/v1/customers").status_code for _ in range(60)}
    assert statuses == {200, 500}


@pytest.mark.parametrize(
    "reason",
    [
        "global-rate",
        "endpoint-rate",
        "global-concurrency",
        "endpoint-concurrency",
        "resource-specific",
    ],
)
def test_injected_429s_name_the_configured_limiter(
    raw: Raw, sandbox: SandboxServer, reason: str
) -> None:
    configured = raw(
        "POST",
        "/_sandbox/config",
        json={"faults": {"rate_limit_rate": 1.0, "rate_limit_reason": reason}},
    )
    assert configured.json()["faults"]["rate_limit_reason"] == reason
    refused = raw("GET", "/v1/customers")
    assert refused.status_code == 429
    assert refused.headers["Stripe-Rate-Limited-Reason"] == reason


def test_an_injected_429_without_a_reason_sends_no_stripe_header(
    raw: Raw, sandbox: SandboxServer
) -> None:
    raw(
        "POST",
        "/_sandbox/config",
        json={"faults": {"rate_limit_rate": 1.0, "rate_limit_reason": ""}},
    )
    refused = raw("GET", "/v1/customers")
    assert refused.status_code == 429
    assert "Stripe-Rate-Limited-Reason" not in refused.headers


def test_an_unknown_rate_limit_reason_is_refused(raw: Raw, sandbox: SandboxServer) -> None:
    answer = raw("POST", "/_sandbox/config", json={"faults": {"rate_limit_reason": "too-fast"}})
    assert answer.status_code == 400
    assert "rate_limit_reason" in answer.text
