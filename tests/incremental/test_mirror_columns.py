"""card-expiry reads the mirror as columns (jobs.incremental.mirror_customers and
mirror_default_cards): the same customers frame and default cards as the records a listing
gives, which the job builds one customer at a time (card_expiry_job.records_from_mirror)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from jobs.card_expiry_job import default_cards, mirror_frame, records_from_mirror
from jobs.incremental import mirror_customers, mirror_default_cards
from reconcile.rules.cards import cards_frame
from reconcile.rules.snapshots import customers_frame

KEYS = ("user_id", "plan")


def _pm(pm_id: str, **card: Any) -> dict[str, Any]:
    fields = {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}
    return {"id": pm_id, "object": "payment_method", "type": "card", "card": {**fields, **card}}


def _customer(number: int, default: Any = None, source: Any = None, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": f"cus_{number:04d}",
        "object": "customer",
        "created": 1_700_000_000 - number,
        "email": f"c{number}@example.com" if number % 5 else None,
        "name": f"Name {number}" if number % 3 else None,
        "metadata": {"user_id": str(number)} if number % 2 else {"plan": "pro"},
        "livemode": False,
        "invoice_settings": {"default_payment_method": default},
    }
    if source is not None:
        record["default_source"] = source
    record.update(extra)
    return record


def _records() -> list[dict[str, Any]]:
    legacy = {
        "id": "card_1",
        "object": "card",
        "brand": "amex",
        "last4": "0005",
        "exp_month": 1,
        "exp_year": 2027,
        "fingerprint": "fp1",
    }
    sepa = {"id": "pm_sepa", "object": "payment_method", "type": "sepa_debit", "card": None}
    bank = {"id": "ba_1", "object": "bank_account"}
    return [
        _customer(1, _pm("pm_1", fingerprint="a")),
        _customer(2, _pm("pm_2", exp_month=None, brand=None)),
        _customer(3, "pm_3"),  # not expanded: no facts
        _customer(4, None, legacy),
        _customer(5, None, "card_9"),  # a source id alone
        _customer(6, sepa),
        _customer(7, None, bank),
        _customer(8, _pm("pm_8", last4='12"\n4'), legacy),
        _customer(9),
        *(_customer(10 + n, _pm(f"pm_x{n}", exp_year=2020 + n)) for n in range(30)),
    ]


def _expected(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    records = records_from_mirror(frame, KEYS)
    return customers_frame(records, KEYS), cards_frame(default_cards(records))


def test_columns_give_what_the_records_give() -> None:
    frame = mirror_frame(_records(), KEYS)
    customers, cards = _expected(frame)
    assert len(cards) == 34  # the checks below compare something
    assert_frame_equal(mirror_customers(frame), customers)
    assert_frame_equal(mirror_default_cards(frame), cards)


def test_stale_facts_give_no_card() -> None:
    frame = mirror_frame(_records(), KEYS)
    # Facts of another payment method than the default (as after a missed event).
    frame.loc[0, "default_facts"] = json.dumps(_pm("pm_other"), sort_keys=True)
    _, cards = _expected(frame)
    assert "cus_0001" not in set(cards["customer_id"])
    assert_frame_equal(mirror_default_cards(frame), cards)


def test_facts_arrow_cannot_type_are_read_one_by_one() -> None:
    frame = mirror_frame(_records(), KEYS)
    frame.loc[1, "default_facts"] = json.dumps(_pm("pm_2", exp_month="7"), sort_keys=True)
    _, cards = _expected(frame)
    assert_frame_equal(mirror_default_cards(frame), cards)


@pytest.mark.parametrize("size", [0, 1])
def test_small_mirrors(size: int) -> None:
    frame = mirror_frame(_records()[:size], KEYS)
    _, cards = _expected(frame)
    assert_frame_equal(mirror_default_cards(frame), cards, check_index_type=False)
