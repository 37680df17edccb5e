"""Minimal subscriptions: create for a customer, list by customer, canceled on delete."""

from __future__ import annotations

from tests.sandbox.conftest import LIVE_KEY, Raw


def _customer(raw: Raw, key: str | None = None) -> str:
    kwargs = {"key": key} if key else {}
    response = raw("POST", "/v1/customers", data={"email": "a@example.com"}, **kwargs)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _subscribe(raw: Raw, customer: str, **extra: str) -> dict:  # type: ignore[type-arg]
    data = {"customer": customer, "items[0][price]": "price_basic", **extra}
    response = raw("POST", "/v1/subscriptions", data=data)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_create_then_list_by_customer(raw: Raw) -> None:
    first, second = _customer(raw), _customer(raw)
    created = _subscribe(raw, first, **{"items[0][quantity]": "2", "metadata[plan]": "pro"})
    assert created["object"] == "subscription"
    assert created["id"].startswith("sub_")
    assert created["customer"] == first
    assert created["status"] == "active"
    assert created["metadata"] == {"plan": "pro"}
    item = created["items"]["data"][0]
    assert (item["price"]["id"], item["quantity"]) == ("price_basic", 2)

    listed = raw("GET", "/v1/subscriptions", params={"customer": first}).json()
    assert [s["id"] for s in listed["data"]] == [created["id"]]
    assert listed["has_more"] is False
    other = raw("GET", "/v1/subscriptions", params={"customer": second}).json()
    assert other["data"] == []


def test_missing_items_or_unknown_customer_are_refused(raw: Raw) -> None:
    customer = _customer(raw)
    no_items = raw("POST", "/v1/subscriptions", data={"customer": customer})
    assert no_items.status_code == 400
    assert no_items.json()["error"]["param"] == "items"
    unknown = raw(
        "POST", "/v1/subscriptions", data={"customer": "cus_nope", "items[0][price]": "p"}
    )
    assert unknown.status_code == 404
    bad_quantity = raw(
        "POST",
        "/v1/subscriptions",
        data={"customer": customer, "items[0][price]": "p", "items[0][quantity]": "0"},
    )
    assert bad_quantity.status_code == 400


def test_deleting_the_customer_cancels_its_subscriptions(raw: Raw) -> None:
    customer = _customer(raw)
    subscription = _subscribe(raw, customer)
    assert raw("DELETE", f"/v1/customers/{customer}").status_code == 200
    active = raw("GET", "/v1/subscriptions", params={"customer": customer}).json()
    assert active["data"] == []
    every = raw("GET", "/v1/subscriptions", params={"customer": customer, "status": "all"}).json()
    assert [(s["id"], s["status"]) for s in every["data"]] == [(subscription["id"], "canceled")]


def test_subscriptions_belong_to_their_mode(raw: Raw) -> None:
    customer = _customer(raw)
    _subscribe(raw, customer)
    live = raw("GET", "/v1/subscriptions", params={"customer": customer}, key=LIVE_KEY).json()
    assert live["data"] == []
