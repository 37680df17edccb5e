"""Subscriptions in every status: create, load, list by customer and status, cancel, and
canceled when their customer is deleted."""

from __future__ import annotations

import pytest
import stripe

from sandbox.runner import SandboxServer
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


_EVERY_STATUS = (
    "active",
    "trialing",
    "past_due",
    "unpaid",
    "incomplete",
    "incomplete_expired",
    "canceled",
    "paused",
)


def _load_every_status(raw: Raw, customer: str) -> dict[str, str]:
    """One subscription per status, loaded through the admin route; status -> id."""
    ids = {status: f"sub_{status}" for status in _EVERY_STATUS}
    subscriptions = [
        {"id": ids[status], "customer": customer, "status": status, "created": 1_000 + n}
        for n, status in enumerate(_EVERY_STATUS)
    ]
    loaded = raw("POST", "/_sandbox/load", json={"mode": "test", "subscriptions": subscriptions})
    assert loaded.status_code == 200, loaded.text
    return ids


def _listed(raw: Raw, **params: str) -> list[tuple[str, str]]:
    body = raw("GET", "/v1/subscriptions", params={"limit": "100", **params}).json()
    return [(s["id"], s["status"]) for s in body["data"]]


def test_the_default_listing_leaves_out_canceled_only(raw: Raw) -> None:
    customer = _customer(raw)
    ids = _load_every_status(raw, customer)
    listed = _listed(raw, customer=customer)
    # Newest first; every status but canceled, as Stripe's default.
    expected = [(ids[s], s) for s in reversed(_EVERY_STATUS) if s != "canceled"]
    assert listed == expected
    assert len(_listed(raw, customer=customer, status="all")) == len(_EVERY_STATUS)


@pytest.mark.parametrize("status", _EVERY_STATUS)
def test_a_status_filter_lists_that_status_only(raw: Raw, status: str) -> None:
    customer = _customer(raw)
    ids = _load_every_status(raw, customer)
    assert _listed(raw, customer=customer, status=status) == [(ids[status], status)]


def test_ended_lists_canceled_and_incomplete_expired(raw: Raw) -> None:
    customer = _customer(raw)
    ids = _load_every_status(raw, customer)
    assert _listed(raw, customer=customer, status="ended") == [
        (ids["canceled"], "canceled"),
        (ids["incomplete_expired"], "incomplete_expired"),
    ]


def test_an_unknown_status_filter_is_refused(raw: Raw) -> None:
    response = raw("GET", "/v1/subscriptions", params={"status": "pending"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "status"


def test_deleting_the_customer_cancels_every_live_status(raw: Raw) -> None:
    customer = _customer(raw)
    ids = _load_every_status(raw, customer)
    assert raw("DELETE", f"/v1/customers/{customer}").status_code == 200
    statuses = dict(_listed(raw, customer=customer, status="all"))
    assert statuses[ids["incomplete_expired"]] == "incomplete_expired"  # already ended
    assert {s for i, s in statuses.items() if i != ids["incomplete_expired"]} == {"canceled"}
    assert _listed(raw, customer=customer) == [(ids["incomplete_expired"], "incomplete_expired")]
    canceled = raw("GET", f"/v1/subscriptions/{ids['past_due']}").json()
    assert canceled["canceled_at"] is not None
    assert canceled["ended_at"] is not None


def test_the_api_creates_trialing_and_incomplete_subscriptions(raw: Raw) -> None:
    customer = _customer(raw)
    trial = _subscribe(raw, customer, trial_period_days="14")
    assert trial["status"] == "trialing"
    assert trial["trial_end"] == trial["created"] + 14 * 86_400
    incomplete = _subscribe(raw, customer, payment_behavior="default_incomplete")
    assert incomplete["status"] == "incomplete"
    bad = raw(
        "POST",
        "/v1/subscriptions",
        data={"customer": customer, "items[0][price]": "p", "payment_behavior": "maybe"},
    )
    assert bad.status_code == 400


def test_retrieve_and_cancel_one_subscription(raw: Raw) -> None:
    customer = _customer(raw)
    kept, canceled = _subscribe(raw, customer), _subscribe(raw, customer)
    response = raw("DELETE", f"/v1/subscriptions/{canceled['id']}")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert raw("GET", f"/v1/subscriptions/{canceled['id']}").json()["status"] == "canceled"
    assert _listed(raw, customer=customer) == [(kept["id"], "active")]
    assert raw("DELETE", f"/v1/subscriptions/{canceled['id']}").status_code == 400
    assert raw("GET", "/v1/subscriptions/sub_nope").status_code == 404


def test_the_sdk_lists_subscriptions_in_any_status(
    raw: Raw, client: stripe.StripeClient, sandbox: SandboxServer
) -> None:
    customer = _customer(raw)
    past_due = sandbox.store.add_subscription("test", customer, "past_due")
    listed = client.v1.subscriptions.list({"customer": customer})
    assert [(s.id, s.status) for s in listed.data] == [(past_due.id, "past_due")]
    sandbox.store.set_subscription_status("test", past_due.id, "unpaid")
    unpaid = client.v1.subscriptions.list({"customer": customer, "status": "unpaid"})
    assert [s.id for s in unpaid.data] == [past_due.id]
    with pytest.raises(ValueError, match="unknown subscription status"):
        sandbox.store.add_subscription("test", customer, "frozen")


def test_loading_a_subscription_again_moves_it_to_another_status(raw: Raw) -> None:
    customer = _customer(raw)
    record = {"id": "sub_moving", "customer": customer, "status": "trialing"}
    raw("POST", "/_sandbox/load", json={"subscriptions": [record]})
    raw("POST", "/_sandbox/load", json={"subscriptions": [{**record, "status": "paused"}]})
    assert _listed(raw, customer=customer, status="all") == [("sub_moving", "paused")]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"customer": "cus_nope"}, "no such customer"),
        ({"status": "frozen"}, "unknown subscription status"),
    ],
)
def test_the_load_route_refuses_bad_subscriptions(
    raw: Raw, record: dict[str, str], message: str
) -> None:
    customer = _customer(raw)
    body = {"subscriptions": [{"customer": customer, **record}]}
    response = raw("POST", "/_sandbox/load", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
