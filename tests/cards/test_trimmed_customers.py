"""card-expiry holds each listed customer trimmed to what its rules read: same results."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from jobs.card_expiry_job import cards_of_customer, default_cards, trimmed_customer
from reconcile.rules.snapshots import customers_frame

FIXTURES = Path("/work/shared/stripe-fixtures")  # as tests/sandbox/test_shapes.py
KEYS = ["user_id", "plan"]


def _fixture(name: str) -> dict[str, Any]:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"{path} is not on this machine (Stripe's sample objects, ../shared)")
    return dict(json.loads(path.read_text()))


def _customers() -> list[dict[str, Any]]:
    """Customers as a listing with expand[] returns them: a payment method inline, a
    legacy card source, a bank account source, an id only, nothing."""
    customer, pm = _fixture("customer.json"), _fixture("payment_method.json")
    with_pm = copy.deepcopy(customer)
    with_pm["id"] = "cus_pm"
    with_pm["metadata"] = {"user_id": "7", "plan": "pro"}
    with_pm["invoice_settings"]["default_payment_method"] = pm
    with_source = copy.deepcopy(customer)
    with_source.update(id="cus_source", default_source={
        "id": "card_1", "object": "card", "brand": "Visa", "last4": "4242",
        "exp_month": 2, "exp_year": 2027, "fingerprint": "fp1", "country": "US",
    })
    with_bank = copy.deepcopy(customer)
    with_bank.update(id="cus_bank", default_source={"id": "ba_1", "object": "bank_account"})
    id_only = copy.deepcopy(customer)
    id_only["id"] = "cus_id_only"
    id_only["invoice_settings"]["default_payment_method"] = "pm_123"
    bare = copy.deepcopy(customer)
    bare["id"] = "cus_bare"
    return [with_pm, with_source, with_bank, id_only, bare]


def test_trimmed_customers_give_the_same_cards_and_snapshot() -> None:
    full = _customers()
    trimmed = [trimmed_customer(copy.deepcopy(r)) for r in full]

    assert default_cards(trimmed) == default_cards(full)
    assert len(default_cards(full)) == 2  # the inline payment method and the card source
    pd.testing.assert_frame_equal(customers_frame(trimmed, KEYS), customers_frame(full, KEYS))
    # What is dropped is what nothing reads: the card's checks, networks, addresses...
    assert len(json.dumps(trimmed[0])) < len(json.dumps(full[0])) / 2


def test_a_trimmed_customer_still_names_its_default_for_the_all_cards_scan() -> None:
    class Listing:
        """Stands in for the gateway: the customer's cards as Stripe lists them."""

        def list_payment_methods(self, customer_id: str, *, type: str) -> list[dict[str, Any]]:
            return [_fixture("payment_method.json")]

    for record in _customers():
        expected = cards_of_customer(Listing(), record)  # type: ignore[arg-type]
        assert cards_of_customer(Listing(), trimmed_customer(record)) == expected  # type: ignore[arg-type]
