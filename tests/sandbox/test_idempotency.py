# mypy: disable-error-code="union-attr"
"""Idempotency keys: replay with the same parameters, an error with different ones."""

from __future__ import annotations

import stripe

from reconcile.sandbox.runner import SandboxServer
from tests.sandbox.conftest import LIVE_KEY, Raw


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
