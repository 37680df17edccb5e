# mypy: disable-error-code="union-attr"
"""Payment methods: card creation, attach/detach, listing by customer, defaults."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from tests.sandbox.conftest import Raw


def _card(client: stripe.StripeClient, number: str = "4242424242424242", **card: Any) -> Any:
    # The overrides are deliberately loose (invalid months, short numbers): untyped on purpose.
    params: Any = {
        "type": "card",
        "card": {"number": number, "exp_month": 8, "exp_year": 2031, "cvc": "123", **card},
    }
    return client.v1.payment_methods.create(params)


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4242424242424242", "visa"),
        ("5555555555554444", "mastercard"),
        ("2223003122003222", "mastercard"),
        ("378282246310005", "amex"),
        ("6011111111111117", "discover"),
        ("3056930009020004", "diners"),
        ("3566002020360505", "jcb"),
        ("6200000000000005", "unionpay"),
    ],
)
def test_card_brand_and_last4_come_from_the_number(
    client: stripe.StripeClient, number: str, brand: str
) -> None:
    method = _card(client, number)
    assert method.id.startswith("pm_")
    assert method.type == "card"
    assert method.card.brand == brand
    assert method.card.last4 == number[-4:]
    assert (method.card.exp_month, method.card.exp_year) == (8, 2031)
    assert method.customer is None


def test_fingerprint_is_the_same_for_the_same_number_only(client: stripe.StripeClient) -> None:
    first, second = _card(client), _card(client, exp_month=9)
    other = _card(client, "5555555555554444")
    assert first.id != second.id
    assert first.card.fingerprint == second.card.fingerprint
    assert first.card.fingerprint != other.card.fingerprint


@pytest.mark.parametrize(
    ("card", "code"),
    [
        ({"number": "4242424242424241"}, "incorrect_number"),
        ({"number": "42"}, "incorrect_number"),
        ({"exp_month": 13}, "invalid_expiry_month"),
        ({"exp_year": 2001}, "invalid_expiry_year"),
    ],
)
def test_invalid_cards_are_card_errors(
    client: stripe.StripeClient, card: dict[str, Any], code: str
) -> None:
    with pytest.raises(stripe.CardError) as error:
        _card(client, **card)
    assert error.value.code == code
    assert error.value.http_status == 402


def test_attach_list_detach_through_both_list_routes(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({})
    older, newer = _card(client), _card(client, "5555555555554444")
    client.v1.payment_methods.attach(older.id, {"customer": customer.id})
    attached = client.v1.payment_methods.attach(newer.id, {"customer": customer.id})
    assert attached.customer == customer.id
    nested = client.v1.customers.payment_methods.list(customer.id, {"type": "card"})
    flat = client.v1.payment_methods.list({"customer": customer.id, "type": "card"})
    assert [m.id for m in nested.data] == [newer.id, older.id]
    assert [m.id for m in flat.data] == [newer.id, older.id]
    assert nested.url == f"/v1/customers/{customer.id}/payment_methods"
    detached = client.v1.payment_methods.detach(older.id)
    assert detached.customer is None
    after = client.v1.customers.payment_methods.list(customer.id, {"type": "card"})
    assert [m.id for m in after.data] == [newer.id]
    one = client.v1.customers.payment_methods.retrieve(customer.id, newer.id)
    assert one.id == newer.id


def test_listing_a_customers_methods_pages(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({})
    ids = []
    for _ in range(7):
        method = _card(client)
        client.v1.payment_methods.attach(method.id, {"customer": customer.id})
        ids.append(method.id)
    pages = client.v1.customers.payment_methods.list(customer.id, {"type": "card", "limit": 3})
    assert [m.id for m in pages.auto_paging_iter()] == list(reversed(ids))


def test_attaching_a_method_of_another_customer_fails(client: stripe.StripeClient) -> None:
    first, second = client.v1.customers.create({}), client.v1.customers.create({})
    method = _card(client)
    client.v1.payment_methods.attach(method.id, {"customer": first.id})
    again = client.v1.payment_methods.attach(method.id, {"customer": first.id})
    assert again.customer == first.id  # re-attaching to the same customer is harmless
    with pytest.raises(stripe.InvalidRequestError, match="already been attached to a customer"):
        client.v1.payment_methods.attach(method.id, {"customer": second.id})
    assert client.v1.payment_methods.retrieve(method.id).customer == first.id


def test_detaching_an_unattached_method_fails(client: stripe.StripeClient) -> None:
    method = _card(client)
    with pytest.raises(stripe.InvalidRequestError, match="not attached to a customer"):
        client.v1.payment_methods.detach(method.id)


def test_default_payment_method_must_be_attached_and_clears_on_detach(
    client: stripe.StripeClient,
) -> None:
    customer = client.v1.customers.create({})
    method = _card(client)
    with pytest.raises(stripe.InvalidRequestError, match="must be attached to the customer"):
        client.v1.customers.update(
            customer.id, {"invoice_settings": {"default_payment_method": method.id}}
        )
    client.v1.payment_methods.attach(method.id, {"customer": customer.id})
    updated = client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": method.id}}
    )
    assert updated.invoice_settings.default_payment_method == method.id
    client.v1.payment_methods.detach(method.id)
    assert client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method is None


def test_create_customer_with_payment_method_attaches_it(client: stripe.StripeClient) -> None:
    method = _card(client)
    customer = client.v1.customers.create(
        {
            "payment_method": method.id,
            "invoice_settings": {"default_payment_method": method.id},
            "expand": ["invoice_settings.default_payment_method"],
        }
    )
    assert customer.invoice_settings.default_payment_method.id == method.id
    assert client.v1.payment_methods.retrieve(method.id).customer == customer.id


def test_test_mode_card_tokens_attach_as_fresh_methods(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({})
    method = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    assert method.id.startswith("pm_")
    assert method.id != "pm_card_visa"
    assert method.card.last4 == "4242"
    assert method.customer == customer.id


def test_unknown_payment_method_is_a_404(raw: Raw) -> None:
    response = raw("GET", "/v1/payment_methods/pm_nope")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "No such PaymentMethod: 'pm_nope'"


def test_payment_methods_of_an_unknown_customer_is_a_404(raw: Raw) -> None:
    response = raw("GET", "/v1/customers/cus_nope/payment_methods", params={"type": "card"})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "No such customer: 'cus_nope'"
