"""Keys, modes and the separation of test and live data."""

from __future__ import annotations

import base64

import pytest
import stripe

from sandbox.runner import SandboxServer
from tests.sandbox.conftest import LIVE_KEY, TEST_KEY, Raw, make_client


def test_missing_key_is_a_401_with_stripes_body(raw: Raw) -> None:
    response = raw("GET", "/v1/customers", key=None)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("You did not provide an API key.")


@pytest.mark.parametrize(
    "key",
    [
        "pk_test_publishable0001",
        "sk_prod_abcdefgh12345",
        "whatever",
        "SK_TEST_abcdefgh12345",
        "sktest_abcdefgh12345",
    ],
)
def test_unknown_key_is_a_401_that_never_echoes_the_key(raw: Raw, key: str) -> None:
    response = raw("GET", "/v1/customers", key=key)
    assert response.status_code == 401
    message = response.json()["error"]["message"]
    assert message.startswith("Invalid API Key provided: ")
    assert key not in message


@pytest.mark.parametrize(
    ("key", "livemode"),
    [
        ("sk_test_123", False),
        ("rk_test_1", False),
        ("sk_test_with-dashes_and_underscores", False),
        ("sk_live_x", True),
        ("rk_live_9", True),
    ],
)
def test_any_key_with_a_known_prefix_is_accepted_as_stripe_mock_does(
    sandbox: SandboxServer, key: str, livemode: bool
) -> None:
    short = make_client(sandbox, key)
    created = short.v1.customers.create({"name": "Short"})
    assert created.livemode is livemode
    assert [c.id for c in short.v1.customers.list({}).data] == [created.id]
    mode = "live" if livemode else "test"
    assert sandbox.request_log.entries()[-1].mode == mode


@pytest.mark.parametrize("prefix", ["sk_test_", "rk_live_"])
def test_a_bare_prefix_is_a_401(raw: Raw, prefix: str) -> None:
    response = raw("GET", "/v1/customers", key=prefix)
    assert response.status_code == 401
    assert response.json()["error"]["message"].startswith("Invalid API Key provided: ")


def test_sdk_raises_authentication_error(sandbox: SandboxServer) -> None:
    bad = make_client(sandbox, "sk_prod_wrong")
    with pytest.raises(stripe.AuthenticationError):
        bad.v1.customers.list({})


@pytest.mark.parametrize("key", [TEST_KEY, "rk_test_restricted0001"])
def test_basic_auth_with_the_key_as_user(raw: Raw, key: str) -> None:
    token = base64.b64encode(f"{key}:".encode()).decode()
    response = raw("GET", "/v1/customers", key=None, headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 200


def test_restricted_keys_pick_their_mode(raw: Raw) -> None:
    created = raw("POST", "/v1/customers", key="rk_live_restricted0001", data={"name": "L"}).json()
    assert created["livemode"] is True
    listed = raw("GET", "/v1/customers", key=LIVE_KEY).json()
    assert [c["id"] for c in listed["data"]] == [created["id"]]


def test_modes_are_separate(client: stripe.StripeClient, live_client: stripe.StripeClient) -> None:
    in_test = client.v1.customers.create({"email": "t@example.com"})
    in_live = live_client.v1.customers.create({"email": "l@example.com"})
    assert in_test.livemode is False
    assert in_live.livemode is True
    assert [c.id for c in client.v1.customers.list({}).data] == [in_test.id]
    assert [c.id for c in live_client.v1.customers.list({}).data] == [in_live.id]
    assert client.v1.customers.list({"email": "l@example.com"}).data == []


def test_other_modes_customer_is_a_404_with_stripes_hint(
    raw: Raw, client: stripe.StripeClient, live_client: stripe.StripeClient
) -> None:
    in_test = client.v1.customers.create({})
    in_live = live_client.v1.customers.create({})
    from_live = raw("GET", f"/v1/customers/{in_test.id}", key=LIVE_KEY)
    assert from_live.status_code == 404
    error = from_live.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "resource_missing",
        "id",
    )
    assert error["message"] == (
        f"No such customer: '{in_test.id}'; a similar object exists in test mode, "
        "but a live mode key was used to make this request."
    )
    with pytest.raises(stripe.InvalidRequestError) as from_test:
        client.v1.customers.update(in_live.id, {"name": "x"})
    assert str(from_test.value.user_message).endswith(
        "a similar object exists in live mode, but a test mode key was used to make this request."
    )


def test_other_modes_payment_method_is_a_404_with_the_hint(
    raw: Raw, client: stripe.StripeClient
) -> None:
    method = client.v1.payment_methods.create(
        {"type": "card", "card": {"number": "4242424242424242", "exp_month": 1, "exp_year": 2040}}
    )
    response = raw("GET", f"/v1/payment_methods/{method.id}", key=LIVE_KEY)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        f"No such PaymentMethod: '{method.id}'; a similar object exists in test mode, "
        "but a live mode key was used to make this request."
    )


def test_unknown_route_is_stripes_404(raw: Raw) -> None:
    response = raw("GET", "/v1/charges")
    assert response.status_code == 404
    assert "Unrecognized request URL (GET: /v1/charges)" in response.json()["error"]["message"]
