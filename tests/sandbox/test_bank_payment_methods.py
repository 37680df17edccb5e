# mypy: disable-error-code="union-attr"
"""Payment methods beyond cards: SEPA Direct Debit and US bank accounts, and listing a
customer's methods of every type or of one."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from sandbox.runner import SandboxServer
from tests.sandbox.conftest import Raw, customer_record

TEST_IBAN = "DE89370400440532013000"  # Stripe's SEPA test IBAN


def _sepa(client: stripe.StripeClient, iban: str = TEST_IBAN, **billing: str) -> Any:
    params: Any = {
        "type": "sepa_debit",
        "sepa_debit": {"iban": iban},
        "billing_details": {"name": "Jenny Rosen", "email": "jenny@example.com", **billing},
    }
    return client.v1.payment_methods.create(params)


def _ach(client: stripe.StripeClient, **bank: str) -> Any:
    params: Any = {
        "type": "us_bank_account",
        "us_bank_account": {
            "account_holder_type": "individual",
            "account_number": "000123456789",
            "routing_number": "110000000",
            **bank,
        },
        "billing_details": {"name": "Jenny Rosen"},
    }
    return client.v1.payment_methods.create(params)


def _card(client: stripe.StripeClient) -> Any:
    params: Any = {
        "type": "card",
        "card": {"number": "4242424242424242", "exp_month": 8, "exp_year": 2031},
    }
    return client.v1.payment_methods.create(params)


def test_a_sepa_debit_method_has_stripes_shape(client: stripe.StripeClient) -> None:
    method = _sepa(client)
    assert method.id.startswith("pm_")
    assert method.type == "sepa_debit"
    assert "card" not in method.to_dict()
    sepa = method.sepa_debit
    assert (sepa.country, sepa.bank_code, sepa.last4) == ("DE", "37040044", "3000")
    assert method.billing_details.name == "Jenny Rosen"
    assert method.billing_details.email == "jenny@example.com"
    assert _sepa(client, iban="DE89 3704 0044 0532 0130 00").sepa_debit.fingerprint == (
        sepa.fingerprint
    )
    assert client.v1.payment_methods.retrieve(method.id).to_dict() == method.to_dict()


def test_a_us_bank_account_method_has_stripes_shape(client: stripe.StripeClient) -> None:
    method = _ach(client)
    assert method.type == "us_bank_account"
    bank = method.us_bank_account
    assert (bank.last4, bank.routing_number, bank.account_type) == ("6789", "110000000", "checking")
    assert bank.account_holder_type == "individual"
    assert bank.fingerprint == _ach(client).us_bank_account.fingerprint
    other = _ach(client, account_number="000111111116")
    assert bank.fingerprint != other.us_bank_account.fingerprint


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"type": "sepa_debit", "sepa_debit[iban]": "DE89370400440532013001"}, "sepa_debit[iban]"),
        ({"type": "sepa_debit", "sepa_debit[iban]": "XX12"}, "sepa_debit[iban]"),
        ({"type": "sepa_debit", "sepa_debit[iban]": TEST_IBAN}, "billing_details[name]"),
        (
            {
                "type": "sepa_debit",
                "sepa_debit[iban]": TEST_IBAN,
                "billing_details[name]": "J",
            },
            "billing_details[email]",
        ),
        (
            {
                "type": "us_bank_account",
                "us_bank_account[account_number]": "000123456789",
                "us_bank_account[routing_number]": "110000001",
                "billing_details[name]": "J",
            },
            "us_bank_account[routing_number]",
        ),
        (
            {
                "type": "us_bank_account",
                "us_bank_account[account_number]": "12",
                "us_bank_account[routing_number]": "110000000",
                "billing_details[name]": "J",
            },
            "us_bank_account[account_number]",
        ),
        ({"type": "sepa_debit", "card[number]": "4242424242424242"}, "card"),
        ({"type": "ideal"}, "type"),
    ],
)
def test_bad_bank_details_are_refused_naming_the_parameter(
    raw: Raw, params: dict[str, str], param: str
) -> None:
    response = raw("POST", "/v1/payment_methods", data=params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert "0532013001" not in error["message"]  # account numbers stay out of messages


def _attached(client: stripe.StripeClient, customer_id: str) -> dict[str, str]:
    """One method of each type attached to the customer, oldest first; type -> id."""
    methods = {"card": _card(client), "sepa_debit": _sepa(client), "us_bank_account": _ach(client)}
    for method in methods.values():
        client.v1.payment_methods.attach(method.id, {"customer": customer_id})
    return {kind: method.id for kind, method in methods.items()}


def test_a_customers_methods_of_every_type_without_a_type(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({})
    ids = _attached(client, customer.id)
    nested = client.v1.customers.payment_methods.list(customer.id)
    flat = client.v1.payment_methods.list({"customer": customer.id})
    newest_first = [ids["us_bank_account"], ids["sepa_debit"], ids["card"]]
    assert [m.id for m in nested.data] == newest_first
    assert [m.id for m in flat.data] == newest_first


@pytest.mark.parametrize("kind", ["card", "sepa_debit", "us_bank_account"])
def test_a_type_filter_lists_that_type_only(client: stripe.StripeClient, kind: str) -> None:
    customer = client.v1.customers.create({})
    ids = _attached(client, customer.id)
    nested = client.v1.customers.payment_methods.list(customer.id, {"type": kind})  # type: ignore[typeddict-item]
    flat = client.v1.payment_methods.list({"customer": customer.id, "type": kind})  # type: ignore[typeddict-item]
    assert [m.id for m in nested.data] == [ids[kind]]
    assert [(m.id, m.type) for m in flat.data] == [(ids[kind], kind)]


def test_a_stripe_type_the_sandbox_never_holds_lists_nothing(
    raw: Raw, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create({})
    _attached(client, customer.id)
    listed = raw("GET", f"/v1/customers/{customer.id}/payment_methods", params={"type": "link"})
    assert listed.json()["data"] == []
    bogus = raw("GET", f"/v1/customers/{customer.id}/payment_methods", params={"type": "cash"})
    assert (bogus.status_code, bogus.json()["error"]["param"]) == (400, "type")


def test_a_cursor_of_another_type_is_refused(raw: Raw, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({})
    ids = _attached(client, customer.id)
    response = raw(
        "GET",
        f"/v1/customers/{customer.id}/payment_methods",
        params={"type": "card", "starting_after": ids["sepa_debit"]},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "starting_after"


def test_bank_methods_load_through_the_admin_route(raw: Raw, sandbox: SandboxServer) -> None:
    methods = [
        {
            "id": "pm_sepa1",
            "created": 10,
            "customer": "cus_bank",
            "type": "sepa_debit",
            "sepa_debit": {"country": "DE", "last4": "3000", "fingerprint": "fpSEPA"},
        },
        {
            "id": "pm_ach1",
            "created": 11,
            "customer": "cus_bank",
            "type": "us_bank_account",
            "us_bank_account": {"last4": "6789", "routing_number": "110000000"},
            "billing_details": {"name": "Jenny Rosen"},
        },
    ]
    body = {"customers": [customer_record("cus_bank", 5)], "payment_methods": methods}
    assert raw("POST", "/_sandbox/load", json=body).status_code == 200
    listed = raw("GET", "/v1/customers/cus_bank/payment_methods").json()["data"]
    assert [(m["id"], m["type"]) for m in listed] == [
        ("pm_ach1", "us_bank_account"),
        ("pm_sepa1", "sepa_debit"),
    ]
    assert listed[1]["sepa_debit"]["fingerprint"] == "fpSEPA"
    assert listed[0]["billing_details"] == {"name": "Jenny Rosen"}
    bad = {**methods[0], "id": "pm_bad", "type": "paypal"}
    refused = raw("POST", "/_sandbox/load", json={"payment_methods": [bad]})
    assert refused.status_code == 400
    assert "paypal" in refused.json()["error"]["message"]


def test_deleting_the_customer_detaches_bank_methods_too(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({})
    ids = _attached(client, customer.id)
    client.v1.customers.delete(customer.id)
    assert client.v1.payment_methods.retrieve(ids["sepa_debit"]).customer is None
