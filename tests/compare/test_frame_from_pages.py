"""The customers snapshot built by Arrow from stored list pages equals the one built from dicts."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

import reconcile.rules.snapshots as snapshots
from reconcile.rules.snapshots import customers_frame, customers_frame_from_pages
from sandbox.seed import generate_account

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


def _pages(
    records: list[dict[str, Any]], *, size: int = 100, indent: int | None = None
) -> list[bytes]:
    # As Stripe sends them: a list object per page; Stripe's own bodies are indented.
    return [
        json.dumps(
            {
                "object": "list",
                "data": records[i : i + size],
                "has_more": True,
                "url": "/v1/customers",
            },
            indent=indent,
        ).encode()
        for i in range(0, len(records), size)
    ]


@pytest.mark.parametrize("indent", [None, 2])
def test_arrow_and_dict_snapshots_are_equal(indent: int | None) -> None:
    records = _records()
    pd.testing.assert_frame_equal(
        customers_frame_from_pages(_pages(records, indent=indent), KEYS),
        customers_frame(records, KEYS),
    )


@pytest.mark.parametrize(
    "odd",
    [
        {"invoice_settings": {"default_payment_method": {"id": "pm_obj", "object": "card"}}},
        {"metadata": {"plan": 3}},
    ],
)
def test_shapes_arrow_cannot_take_fall_back_to_the_same_result(
    odd: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Several chunks of pages, one of them parsed in Python: the parts join up in order.
    monkeypatch.setattr(snapshots, "PAGES_PER_CHUNK", 2)
    records = _records()
    records[307].update(odd)
    pd.testing.assert_frame_equal(
        customers_frame_from_pages(_pages(records, size=70), KEYS), customers_frame(records, KEYS)
    )


def test_pages_of_any_size_and_empty_pages_keep_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(snapshots, "PAGES_PER_CHUNK", 3)
    records = _records()
    pages = _pages(records, size=37) + _pages([])
    pages.insert(4, json.dumps({"object": "list", "data": []}).encode())
    pd.testing.assert_frame_equal(
        customers_frame_from_pages(pages, KEYS), customers_frame(records, KEYS)
    )


def test_no_pages_give_the_empty_snapshot() -> None:
    pd.testing.assert_frame_equal(customers_frame_from_pages([], KEYS), customers_frame([], KEYS))


@pytest.mark.parametrize(
    "body", [b'{"object": "list"}', b'{"data": [{"email": "a@x"}]}', b"[1, 2]"]
)
def test_a_damaged_page_is_an_error_not_a_silent_gap(body: bytes) -> None:
    with pytest.raises(ValueError, match="damaged"):
        customers_frame_from_pages([*_pages(_records()[:10]), body], KEYS)
