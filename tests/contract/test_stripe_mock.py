"""The gateway's real requests, checked by stripe-mock against Stripe's OpenAPI spec.

stripe-mock runs from Docker (`docker run --rm -p 12111:12111 stripe/stripe-mock`);
set STRIPE_MOCK_URL=http://127.0.0.1:12111 to run these. stripe-mock is stateless: it
validates every parameter and answers with fixture objects, so these tests check
that Stripe would accept what we send, not what it would answer.
"""

from __future__ import annotations

import os
import time

import pytest

from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.pager import iter_customers

STRIPE_MOCK_URL = os.environ.get("STRIPE_MOCK_URL", "")

pytestmark = [
    pytest.mark.stripe_mock,
    pytest.mark.skipif(
        not STRIPE_MOCK_URL,
        reason="STRIPE_MOCK_URL is not set (stripe-mock needs Docker, which this machine lacks)",
    ),
]


@pytest.fixture
def gateway() -> StripeGateway:
    # stripe-mock accepts any sk_test_ key and does not enforce rate limits.
    return StripeGateway("sk_test_123456789abcdefgh", api_base=STRIPE_MOCK_URL)


def test_listing_with_the_snapshot_bound_and_expand(gateway: StripeGateway) -> None:
    bound = int(time.time())
    customers = list(
        iter_customers(
            gateway, created_lt=bound, expand=("data.invoice_settings.default_payment_method",)
        )
    )
    assert customers
    assert all(c["object"] == "customer" for c in customers)


def test_retrieve_update_delete_with_idempotency_keys(gateway: StripeGateway) -> None:
    created = gateway.create_customer(
        {"email": "a@example.com", "name": "A", "metadata": {"user_id": "1"}},
        idempotency_key="contract-create-1",
    )
    customer_id = created["id"]
    assert gateway.retrieve_customer(customer_id)["object"] == "customer"
    updated = gateway.update_customer(
        customer_id, {"metadata": {"plan": "pro", "old": ""}}, idempotency_key="contract-update-1"
    )
    assert updated["object"] == "customer"
    deleted = gateway.delete_customer(customer_id, idempotency_key="contract-delete-1")
    assert deleted.deleted_now is True


def test_search_and_payment_methods(gateway: StripeGateway) -> None:
    found = list(gateway.search_customers('email:"a\\"b@example.com"', limit=10))
    assert all(c["object"] == "customer" for c in found)
    methods = list(gateway.list_payment_methods("cus_123"))
    assert all(m["object"] == "payment_method" for m in methods)
