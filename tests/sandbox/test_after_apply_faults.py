# mypy: disable-error-code="union-attr"
"""Faults after the write applied, and what Stripe stores for the idempotency key then."""

from __future__ import annotations

import pytest
import requests
import stripe

from sandbox.runner import SandboxServer
from tests.sandbox.conftest import Raw, make_client


def _plan(sandbox: SandboxServer, customer_id: str) -> str | None:
    record = sandbox.store.customer("test", customer_id)
    assert record is not None
    return record.metadata.get("plan")


def test_a_500_after_apply_changes_the_customer_and_is_replayed_for_the_key(
    raw: Raw, client: stripe.StripeClient, sandbox: SandboxServer
) -> None:
    customer = client.v1.customers.create({"metadata": {"plan": "free"}})
    sandbox.faults.fail_next("POST", "/v1/customers/{id}", 1, after_apply=True)
    headers = {"Idempotency-Key": "plan-pro-1"}
    data = {"metadata[plan]": "pro"}
    first = raw("POST", f"/v1/customers/{customer.id}", data=data, headers=headers)
    assert first.status_code == 500
    assert first.json()["error"]["type"] == "api_error"
    assert "Idempotent-Replayed" not in first.headers
    assert _plan(sandbox, customer.id) == "pro"  # the write took effect all the same

    # Stripe keeps the 500 for the key: the retry learns nothing and writes nothing.
    client.v1.customers.update(customer.id, {"metadata": {"plan": "team"}})
    retry = raw("POST", f"/v1/customers/{customer.id}", data=data, headers=headers)
    assert retry.status_code == 500
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.headers["Original-Request"] == first.headers["Request-Id"]
    assert _plan(sandbox, customer.id) == "team"

    # A new key is a new request.
    fresh = raw(
        "POST", f"/v1/customers/{customer.id}", data=data, headers={"Idempotency-Key": "pro-2"}
    )
    assert fresh.status_code == 200
    assert _plan(sandbox, customer.id) == "pro"


def test_the_sdk_retrying_an_after_apply_500_gets_the_same_500(sandbox: SandboxServer) -> None:
    client = make_client(sandbox, retries=2)
    customer = client.v1.customers.create({})
    sandbox.request_log.clear()
    sandbox.faults.fail_next("POST", "/v1/customers/{id}", 1, status=503, after_apply=True)
    with pytest.raises(stripe.APIError) as raised:
        client.v1.customers.update(customer.id, {"name": "Ada"})
    assert raised.value.http_status == 503
    entries = sandbox.request_log.entries()
    assert [(e.status, e.applied, e.replayed) for e in entries] == [
        (503, True, False),
        (503, False, True),
        (503, False, True),
    ]
    assert len({e.idempotency_key for e in entries}) == 1
    assert client.v1.customers.retrieve(customer.id).name == "Ada"


def test_a_dropped_connection_after_apply_stores_the_success(sandbox: SandboxServer) -> None:
    client = make_client(sandbox, retries=1)
    sandbox.faults.drop_next("POST", "/v1/customers", 1, after_apply=True)
    created = client.v1.customers.create({"email": "ada@example.com"})
    assert sandbox.store.count("test") == 1  # created once, although sent twice
    first, retry = sandbox.request_log.entries()
    assert (first.status, first.applied, first.replayed) == (0, True, False)
    assert (retry.status, retry.applied, retry.replayed) == (200, False, True)
    assert first.idempotency_key == retry.idempotency_key
    assert client.v1.customers.retrieve(created.id).email == "ada@example.com"


def test_a_replayed_drop_carries_the_replay_header(raw: Raw, sandbox: SandboxServer) -> None:
    sandbox.faults.drop_next("POST", "/v1/customers", 1, after_apply=True)
    headers = {"Idempotency-Key": "create-once"}
    with pytest.raises(requests.ConnectionError):
        raw("POST", "/v1/customers", data={"name": "Ada"}, headers=headers)
    retry = raw("POST", "/v1/customers", data={"name": "Ada"}, headers=headers)
    assert retry.status_code == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["id"] == next(sandbox.store.mode("test").newest_first()).id


def test_a_delete_failing_after_apply_leaves_the_customer_deleted(
    raw: Raw, client: stripe.StripeClient, sandbox: SandboxServer
) -> None:
    customer = client.v1.customers.create({})
    sandbox.faults.fail_next("DELETE", "/v1/customers/{id}", 1, after_apply=True)
    headers = {"Idempotency-Key": "delete-once"}
    assert raw("DELETE", f"/v1/customers/{customer.id}", headers=headers).status_code == 500
    # DELETE carries no idempotency: the retry runs again and finds nothing to delete.
    retry = raw("DELETE", f"/v1/customers/{customer.id}", headers=headers)
    assert retry.status_code == 404
    assert "Idempotent-Replayed" not in retry.headers
    assert retry.json()["error"] == {
        "type": "invalid_request_error",
        "message": f"No such customer: '{customer.id}'",
        "code": "resource_missing",
        "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
        "param": "id",
    }
    assert raw("GET", f"/v1/customers/{customer.id}").json() == {
        "id": customer.id,
        "object": "customer",
        "deleted": True,
    }


def test_a_before_apply_fault_executes_nothing_and_stores_nothing(
    raw: Raw, client: stripe.StripeClient, sandbox: SandboxServer
) -> None:
    customer = client.v1.customers.create({"metadata": {"plan": "free"}})
    sandbox.faults.fail_next("POST", "/v1/customers/{id}", 1)  # the default: before executing
    headers = {"Idempotency-Key": "plan-pro"}
    data = {"metadata[plan]": "pro"}
    assert raw("POST", f"/v1/customers/{customer.id}", data=data, headers=headers).status_code == (
        500
    )
    assert _plan(sandbox, customer.id) == "free"
    retry = raw("POST", f"/v1/customers/{customer.id}", data=data, headers=headers)
    assert retry.status_code == 200
    assert "Idempotent-Replayed" not in retry.headers
    assert _plan(sandbox, customer.id) == "pro"
    assert [e.applied for e in sandbox.request_log.entries()[-2:]] == [False, True]


def test_a_failed_endpoint_under_an_after_apply_fault_still_answers_the_fault(
    raw: Raw, sandbox: SandboxServer
) -> None:
    sandbox.faults.fail_next("POST", "/v1/customers/{id}", 1, after_apply=True)
    headers = {"Idempotency-Key": "update-missing"}
    first = raw("POST", "/v1/customers/cus_missing", data={"name": "x"}, headers=headers)
    assert first.status_code == 500
    # The endpoint ran (a 404 is stored by Stripe), and what the client got was the 500.
    retry = raw("POST", "/v1/customers/cus_missing", data={"name": "x"}, headers=headers)
    assert (retry.status_code, retry.headers["Idempotent-Replayed"]) == (500, "true")
    assert sandbox.request_log.entries()[0].applied is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"after_apply": "yes"}, "after_apply must be true or false"),
        ({"after_apply": True, "status": 429}, "500 to 599"),
        ({"after_apply": True, "status": 404}, "500 to 599"),
    ],
)
def test_the_admin_route_refuses_bad_after_apply_faults(
    raw: Raw, body: dict[str, object], message: str
) -> None:
    response = raw(
        "POST", "/_sandbox/faults", json={"method": "POST", "path": "/v1/customers", **body}
    )
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def test_the_admin_route_schedules_an_after_apply_fault(raw: Raw, sandbox: SandboxServer) -> None:
    scheduled = raw(
        "POST",
        "/_sandbox/faults",
        json={"method": "POST", "path": "/v1/customers", "status": 502, "after_apply": True},
    )
    assert scheduled.json() == {"scheduled": True}
    assert raw("POST", "/v1/customers", data={"name": "Ada"}).status_code == 502
    assert sandbox.store.count("test") == 1


def test_fail_next_refuses_an_after_apply_status_it_cannot_model(sandbox: SandboxServer) -> None:
    with pytest.raises(ValueError, match="500 to 599"):
        sandbox.faults.fail_next("POST", "/v1/customers", 1, status=429, after_apply=True)


def test_random_faults_can_strike_after_apply(raw: Raw, sandbox: SandboxServer) -> None:
    sandbox.faults.error_rate = 1.0
    sandbox.faults.after_apply_share = 1.0
    statuses = [raw("POST", "/v1/customers", data={"name": "n"}).status_code for _ in range(3)]
    assert statuses == [500, 500, 500]
    assert sandbox.store.count("test") == 3
    config = raw("POST", "/_sandbox/config", json={"faults": {"after_apply_share": 0}}).json()
    assert config["faults"]["after_apply_share"] == 0
    assert raw("POST", "/v1/customers", data={"name": "n"}).status_code == 500
    assert sandbox.store.count("test") == 3  # before executing again
