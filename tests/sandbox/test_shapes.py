"""Every key of Stripe's sample objects is present in the sandbox's objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox.conftest import Raw

FIXTURES = Path("/work/shared/stripe-fixtures")


def _missing_keys(sample: Any, ours: Any, where: str = "") -> list[str]:
    """Keys of `sample` absent from `ours`, descending where both sides are objects."""
    missing: list[str] = []
    if isinstance(sample, dict):
        for key, value in sample.items():
            path = f"{where}.{key}" if where else key
            if not isinstance(ours, dict) or key not in ours:
                missing.append(path)
            elif isinstance(value, dict) and isinstance(ours[key], dict):
                missing += _missing_keys(value, ours[key], path)
    return missing


def _fixture(name: str) -> dict[str, Any]:
    path = FIXTURES / f"{name}.json"
    if not path.exists():
        pytest.skip(f"Stripe fixture {path} is not on this machine")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _card(raw: Raw) -> dict[str, Any]:
    data = {
        "type": "card",
        "card[number]": "4242424242424242",
        "card[exp_month]": "8",
        "card[exp_year]": "2030",
        "card[cvc]": "123",
        "metadata[order_id]": "123456789",
    }
    created: dict[str, Any] = raw("POST", "/v1/payment_methods", data=data).json()
    return created


def test_customer_has_every_fixture_key(raw: Raw) -> None:
    method = _card(raw)
    customer = raw("POST", "/v1/customers", data={"payment_method": method["id"]}).json()
    raw(
        "POST",
        f"/v1/customers/{customer['id']}",
        data={"invoice_settings[default_payment_method]": method["id"]},
    )
    fetched = raw("GET", f"/v1/customers/{customer['id']}").json()
    assert _missing_keys(_fixture("customer"), fetched) == []
    assert fetched["object"] == "customer"
    assert fetched["invoice_settings"]["default_payment_method"] == method["id"]


def test_listed_and_expanded_customers_have_every_fixture_key(raw: Raw) -> None:
    raw("POST", "/v1/customers", data={"email": "shape@example.com"})
    listed = raw(
        "GET", "/v1/customers", params={"expand[]": "data.invoice_settings.default_payment_method"}
    ).json()
    assert _missing_keys(_fixture("customer"), listed["data"][0]) == []


def test_deleted_customer_has_every_fixture_key(raw: Raw) -> None:
    customer = raw("POST", "/v1/customers", data={}).json()
    deleted = raw("DELETE", f"/v1/customers/{customer['id']}").json()
    retrieved = raw("GET", f"/v1/customers/{customer['id']}").json()
    sample = _fixture("deleted_customer")
    assert _missing_keys(sample, deleted) == []
    assert _missing_keys(sample, retrieved) == []
    assert set(retrieved) == set(sample)


def test_payment_method_has_every_fixture_key(raw: Raw) -> None:
    method = _card(raw)
    sample = _fixture("payment_method")
    assert _missing_keys(sample, method) == []
    assert method["card"]["checks"]["cvc_check"] == "pass"
    assert method["metadata"] == {"order_id": "123456789"}
    assert _missing_keys(sample, raw("GET", f"/v1/payment_methods/{method['id']}").json()) == []


def test_the_key_check_itself_notices_a_missing_nested_key() -> None:
    sample = {"a": 1, "b": {"c": 2, "d": 3}}
    assert _missing_keys(sample, {"a": 0, "b": {"c": 0}}) == ["b.d"]
    assert _missing_keys(sample, {"b": None}) == ["a"]
