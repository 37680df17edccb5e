"""The customers snapshot built by Arrow from stored JSON equals the one built from dicts."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from reconcile.sandbox.seed import generate_account
from reconcile.snapshots import customers_frame, customers_frame_from_json

KEYS = ["user_id", "plan", "env", "never_set"]


def _records() -> list[dict[str, Any]]:
    records = generate_account(500, seed=3, now=1_790_000_000).customers
    records[0]["metadata"] = None
    records[1].pop("metadata", None)
    records[2]["invoice_settings"] = {"default_payment_method": "pm_listed", "footer": None}
    records[3]["invoice_settings"] = {"default_payment_method": None}
    records[4]["default_payment_method"] = ""
    records[5]["email"] = None
    records[6]["livemode"] = None
    return records


def _texts(records: list[dict[str, Any]]) -> pa.Array:
    return pa.array([json.dumps(r, separators=(",", ":"), sort_keys=True) for r in records])


def test_arrow_and_dict_snapshots_are_equal() -> None:
    records = _records()
    pd.testing.assert_frame_equal(
        customers_frame_from_json(_texts(records), KEYS), customers_frame(records, KEYS)
    )


@pytest.mark.parametrize(
    "odd",
    [
        {"invoice_settings": {"default_payment_method": {"id": "pm_obj", "object": "card"}}},
        {"metadata": {"plan": 3}},
    ],
)
def test_shapes_arrow_cannot_take_fall_back_to_the_same_result(odd: dict[str, Any]) -> None:
    records = _records()
    records[7].update(odd)
    pd.testing.assert_frame_equal(
        customers_frame_from_json(_texts(records), KEYS), customers_frame(records, KEYS)
    )


def test_no_records_give_the_empty_snapshot() -> None:
    pd.testing.assert_frame_equal(
        customers_frame_from_json(pa.array([], pa.string()), KEYS), customers_frame([], KEYS)
    )
