# mypy: disable-error-code="union-attr"
"""Idempotency keys: replay with the same parameters, an error with different ones, what is
stored (once the endpoint ran) and for how long (24 hours of the sandbox clock)."""

from __future__ import annotations

from typing import Any

import requests
import stripe

from sandbox.ratelimit import RateLimits
from sandbox.runner import SandboxConfig, SandboxServer
from tests.sandbox.conftest import LIVE_KEY, TEST_KEY, FakeClock, Raw, make_client


def test_same_key_same_parameters_replays_the_first_response(
    raw: Raw, sandbox: SandboxServer
) -> None:
    headers = {"Idempotency-Key": "create-ada-1"}
    first = raw("POST", "/v1/customers", data={"email": "ada@example.com"}, headers=headers)
    second = raw("POST", "/v1/customers", data={"email": "ada@example.com"}, headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotency-Key"] == "create-ada-1"
    assert sandbox.store.count("test") == 1


def test_same_key_different_parameters_is_an_idempotency_error(raw: Raw) -> None:
    headers = {"Idempotency-Key": "create-ada-2"}
    raw("POST", "/v1/customers", data={"email": "ada@example.com"}, headers=headers)
    clash = raw("POST", "/v1/customers", data={"email": "bob@example.com"}, headers=headers)
    assert clash.status_code == 400
    error = clash.json()["error"]
    assert error["type"] == "idempotency_error"
    assert "same parameters" in error["message"]


def test_keys_are_per_mode(raw: Raw, sandbox: SandboxServer) -> None:
    headers = {"Idempotency-Key": "shared"}
    raw("POST", "/v1/customers", data={"name": "T"}, headers=headers)
    live = raw("POST", "/v1/customers", key=LIVE_KEY, data={"name": "T"}, headers=headers)
    assert "Idempotent-Replayed" not in live.headers
    assert live.json()["livemode"] is True
    assert (sandbox.store.count("test"), sandbox.store.count("live")) == (1, 1)


def test_a_validation_error_is_not_saved(raw: Raw) -> None:
    headers = {"Idempotency-Key": "fix-and-retry"}
    bad = raw("POST", "/v1/customers", data={"email": "nope"}, headers=headers)
    good = raw("POST", "/v1/customers", data={"email": "ok@example.com"}, headers=headers)
    assert bad.status_code == 400
    assert good.status_code == 200


def test_sdk_idempotency_key_replays_an_update(
    client: stripe.StripeClient, sandbox: SandboxServer
) -> None:
    customer = client.v1.customers.create({"metadata": {"n": "1"}})
    options = {"idempotency_key": "bump-n"}
    first = client.v1.customers.update(customer.id, {"metadata": {"n": "2"}}, options)  # type: ignore[arg-type]
    client.v1.customers.update(customer.id, {"metadata": {"n": "3"}})
    replay = client.v1.customers.update(customer.id, {"metadata": {"n": "2"}}, options)  # type: ignore[arg-type]
    assert replay.metadata.n == first.metadata.n == "2"
    assert client.v1.customers.retrieve(customer.id).metadata.n == "3"  # replay wrote nothing
    replayed = [e for e in sandbox.request_log.entries() if e.idempotency_key == "bump-n"]
    assert len(replayed) == 2


def _create(raw: Raw, key: str, name: str = "Ada") -> requests.Response:
    return raw("POST", "/v1/customers", data={"name": name}, headers={"Idempotency-Key": key})


def test_a_key_is_forgotten_after_24_hours_of_the_sandbox_clock(
    raw: Raw, sandbox: SandboxServer
) -> None:
    first = _create(raw, "daily")
    sandbox.clock.advance(24 * 3600 - 1)
    still = _create(raw, "daily")
    assert still.headers["Idempotent-Replayed"] == "true"
    assert still.json()["id"] == first.json()["id"]
    sandbox.clock.advance(1)
    later = _create(raw, "daily")
    assert "Idempotent-Replayed" not in later.headers
    assert later.json()["id"] != first.json()["id"]
    assert sandbox.store.count("test") == 2
    # The new request's result is what the key holds for the next 24 hours.
    assert _create(raw, "daily").headers["Idempotent-Replayed"] == "true"


def test_a_stored_500_expires_with_its_key(raw: Raw, sandbox: SandboxServer) -> None:
    sandbox.faults.fail_next("POST", "/v1/customers", 1, after_apply=True)
    assert _create(raw, "stuck").status_code == 500
    assert _create(raw, "stuck").status_code == 500
    sandbox.clock.advance(24 * 3600)
    assert _create(raw, "stuck").status_code == 200
    assert sandbox.store.count("test") == 2


def test_the_admin_clock_route_moves_the_sandbox_clock(raw: Raw, sandbox: SandboxServer) -> None:
    before = raw("GET", "/_sandbox/clock").json()["now"]
    moved = raw("POST", "/_sandbox/clock", json={"advance": 86_400}).json()
    assert moved["now"] - before >= 86_400
    assert moved["offset"] == 86_400
    created = raw("POST", "/v1/customers", data={"name": "x"}).json()
    assert created["created"] >= int(before) + 86_400  # new objects take the sandbox's time
    pinned = raw("POST", "/_sandbox/clock", json={"now": 2_000_000_000}).json()
    assert 2_000_000_000 <= pinned["now"] < 2_000_000_010
    assert raw("POST", "/_sandbox/clock", json={"now": 1, "advance": 1}).status_code == 400
    raw("POST", "/_sandbox/reset")
    assert raw("GET", "/_sandbox/clock").json()["offset"] == 0


def test_a_rate_limited_request_is_not_stored(raw: Raw, sandbox: SandboxServer) -> None:
    sandbox.faults.fail_next("POST", "/v1/customers", 1, status=429)
    assert _create(raw, "busy").status_code == 429
    retry = _create(raw, "busy")
    assert retry.status_code == 200
    assert "Idempotent-Replayed" not in retry.headers


def test_a_refused_key_is_not_stored(raw: Raw, sandbox: SandboxServer) -> None:
    sandbox.state.revoked_keys.add(TEST_KEY)
    assert _create(raw, "auth").status_code == 401
    sandbox.state.revoked_keys.clear()
    retry = _create(raw, "auth")
    assert retry.status_code == 200
    assert "Idempotent-Replayed" not in retry.headers


def test_delete_ignores_idempotency_keys(raw: Raw, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({})
    headers = {"Idempotency-Key": "delete-it"}
    assert raw("DELETE", f"/v1/customers/{customer.id}", headers=headers).status_code == 200
    again = raw("DELETE", f"/v1/customers/{customer.id}", headers=headers)
    assert again.status_code == 404
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["error"]["message"] == f"No such customer: '{customer.id}'"


def test_the_first_request_sets_the_log_flags(raw: Raw, sandbox: SandboxServer) -> None:
    _create(raw, "flags")
    _create(raw, "flags")
    entries = sandbox.request_log.entries()
    assert [(e.applied, e.replayed) for e in entries] == [(True, False), (False, True)]
    logged = raw("GET", "/_sandbox/requests").json()["data"]
    assert [(e["applied"], e["replayed"]) for e in logged] == [(True, False), (False, True)]


def test_a_configured_time_source_drives_expiry_and_created() -> None:
    clock = FakeClock(start=1_700_000_000)
    config = SandboxConfig(limits=RateLimits(enabled=False), clock=clock)
    with SandboxServer(config) as server:
        client = make_client(server)
        options: Any = {"idempotency_key": "by-fake-clock"}
        first = client.v1.customers.create({"name": "Ada"}, options)
        assert first.created == 1_700_000_000
        clock.advance(24 * 3600)
        second = client.v1.customers.create({"name": "Ada"}, options)
        assert second.id != first.id
        assert second.created == 1_700_000_000 + 24 * 3600
