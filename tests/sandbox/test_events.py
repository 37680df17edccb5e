# mypy: disable-error-code="arg-type,typeddict-item,union-attr"
"""Events: every write emits Stripe's event, `GET /v1/events[/{id}]` lists and retrieves them
with Stripe's filters and cursors, 30 days of retention on the sandbox clock, the controls
that make events late, out of order or never generated, and a seeded account's history.

Through real HTTP with the official SDK (and `requests` for what the SDK hides); the
sandbox's clock is a hand-moved one, so times are exact."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from sandbox.events import RETENTION_SECONDS, EventFaults, EventLog
from sandbox.ratelimit import RateLimits
from sandbox.runner import SandboxConfig, SandboxServer
from sandbox.store import CustomerRecord
from tests.sandbox.conftest import LIVE_KEY, FakeClock, Raw, customer_record, make_client

START = 1_800_000_000  # 2027-01-15, the sandbox's "now" at the start of each test
DAY = 86_400
FIXTURES = Path("/work/shared/stripe-fixtures")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def sandbox(clock: FakeClock) -> Iterator[SandboxServer]:
    # Overrides conftest's: the same sandbox, on a clock the test moves by hand.
    config = SandboxConfig(limits=RateLimits(enabled=False), clock=clock)
    with SandboxServer(config) as server:
        yield server


def _events(client: stripe.StripeClient, **params: Any) -> list[dict[str, Any]]:
    """Every event the listing gives for `params`, in the listing's order (newest first)."""
    listing = client.v1.events.list({"limit": 100, **params})
    return [event.to_dict() for event in listing.auto_paging_iter()]


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def _new_customer(client: stripe.StripeClient, **params: Any) -> str:
    return str(client.v1.customers.create({"email": "ada@example.com", **params}).id)


# --- what each write emits --------------------------------------------------------------
def test_every_write_emits_its_event_in_order(
    client: stripe.StripeClient, sandbox: SandboxServer, clock: FakeClock
) -> None:
    customer = _new_customer(client)
    clock.advance(1)
    card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer}).id
    clock.advance(1)
    client.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": card}})
    client.v1.payment_methods.update(card, {"metadata": {"label": "work"}})
    sandbox.store.update_card("test", card, exp_month=2, exp_year=2031)
    subscription = client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": "price_basic"}]}
    ).id
    sandbox.store.set_subscription_status("test", subscription, "past_due")
    client.v1.subscriptions.cancel(subscription)
    client.v1.payment_methods.detach(card)
    client.v1.customers.delete(customer)

    events = _events(client)
    assert _types(list(reversed(events))) == [
        "customer.created",
        "payment_method.attached",
        "customer.updated",  # the default payment method
        "payment_method.updated",
        "payment_method.automatically_updated",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "payment_method.detached",
        "customer.updated",  # the detached card was the default
        "customer.deleted",
    ]
    assert [event["created"] for event in reversed(events)][:3] == [START, START + 1, START + 2]
    status_change = next(e for e in events if e["type"] == "customer.subscription.updated")
    assert status_change["data"]["previous_attributes"] == {"status": "active"}
    assert status_change["data"]["object"]["status"] == "past_due"
    assert len({event["id"] for event in events}) == len(events)


def test_previous_attributes_hold_only_the_changed_old_values(
    client: stripe.StripeClient,
) -> None:
    customer = _new_customer(client, name="Ada", metadata={"plan": "pro", "seats": "3"})
    card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer}).id
    client.v1.customers.update(
        customer,
        {
            "name": "Ada L.",
            "email": "ada@example.com",  # unchanged: not among the previous attributes
            "metadata": {"plan": "team", "seats": "", "region": "eu"},
            "invoice_settings": {"default_payment_method": card},
        },
    )
    updated = _events(client, type="customer.updated")[0]
    assert updated["data"]["previous_attributes"] == {
        "name": "Ada",
        # Stripe's shape for a hash: the changed keys only, None for a key that is new.
        "metadata": {"plan": "pro", "seats": "3", "region": None},
        "invoice_settings": {"default_payment_method": None},
    }
    after = updated["data"]["object"]
    assert after["metadata"] == {"plan": "team", "region": "eu"}
    assert after["invoice_settings"]["default_payment_method"] == card

    client.v1.payment_methods.update(
        card, {"card": {"exp_month": 6, "exp_year": 2032}, "billing_details": {"name": "A L"}}
    )
    method_update = _events(client, type="payment_method.updated")[0]
    previous = method_update["data"]["previous_attributes"]
    assert previous["card"] == {"exp_month": 1, "exp_year": 2030}  # pm_card_visa: +3 years
    assert previous["billing_details"] == {"name": None}
    assert method_update["data"]["object"]["card"]["exp_year"] == 2032

    created = _events(client, type="customer.created")[0]
    assert "previous_attributes" not in created["data"]


def test_an_update_that_changes_nothing_emits_nothing(client: stripe.StripeClient) -> None:
    customer = _new_customer(client, metadata={"plan": "pro"})
    client.v1.customers.update(customer, {"email": "ada@example.com", "metadata": {"plan": "pro"}})
    assert _types(_events(client)) == ["customer.created"]


def test_the_event_shape_is_stripes(raw: Raw) -> None:
    headers = {"Idempotency-Key": "create-a"}
    created = raw("POST", "/v1/customers", data={"email": "a@example.com"}, headers=headers)
    listed = raw("GET", "/v1/events").json()
    assert (listed["object"], listed["url"], listed["has_more"]) == ("list", "/v1/events", False)
    event = listed["data"][0]
    stripe_sample = json.loads((FIXTURES / "event.json").read_text())
    assert sorted(event) == sorted(stripe_sample)
    assert event["id"].startswith("evt_")
    assert event["object"] == "event"
    assert event["api_version"] == created.headers["Stripe-Version"]
    assert event["created"] == START
    assert event["livemode"] is False
    assert event["pending_webhooks"] == 0
    assert event["request"] == {"id": created.headers["Request-Id"], "idempotency_key": "create-a"}
    assert event["data"]["object"] == created.json()


def test_an_event_shows_its_object_as_it_was_then(client: stripe.StripeClient) -> None:
    customer = _new_customer(client, name="Before")
    client.v1.customers.update(customer, {"name": "After"})
    created, updated = reversed(_events(client))
    assert created["data"]["object"]["name"] == "Before"
    assert updated["data"]["object"]["name"] == "After"


def test_customer_deleted_shows_the_whole_customer_and_ends_its_subscriptions(
    client: stripe.StripeClient,
) -> None:
    customer = _new_customer(client, name="Gone", metadata={"user_id": "7"})
    subscription = client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": "price_basic"}]}
    ).id
    client.v1.customers.delete(customer)
    deleted, ended = _events(client)[:2]
    assert deleted["type"] == "customer.deleted"
    # The full customer as it was, without `deleted` (what Stripe's events show).
    assert deleted["data"]["object"]["metadata"] == {"user_id": "7"}
    assert deleted["data"]["object"]["name"] == "Gone"
    assert "deleted" not in deleted["data"]["object"]
    assert ended["type"] == "customer.subscription.deleted"
    assert ended["data"]["object"]["id"] == subscription
    assert ended["data"]["object"]["status"] == "canceled"


def test_attach_and_detach_events(client: stripe.StripeClient) -> None:
    customer = _new_customer(client, payment_method="pm_card_mastercard")
    card = client.v1.customers.payment_methods.list(customer).data[0].id
    client.v1.payment_methods.detach(card)
    detached, attached, created = _events(client)
    assert created["type"] == "customer.created"  # created with a card: created, attached
    assert attached["type"] == "payment_method.attached"
    assert attached["data"]["object"]["customer"] == customer
    assert "previous_attributes" not in attached["data"]
    assert detached["type"] == "payment_method.detached"
    assert detached["data"]["object"]["customer"] is None
    assert detached["data"]["previous_attributes"] == {"customer": customer}


def test_the_card_updater_emits_automatically_updated(
    raw: Raw, client: stripe.StripeClient
) -> None:
    customer = _new_customer(client)
    card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer}).id
    answer = raw(
        "POST",
        "/_sandbox/card_updater",
        json={"payment_method": card, "exp_month": 9, "exp_year": 2033, "last4": "0005"},
    )
    assert answer.status_code == 200, answer.text
    event = _events(client)[0]
    assert event["type"] == "payment_method.automatically_updated"
    assert event["request"] == {"id": None, "idempotency_key": None}  # no API request
    assert event["data"]["object"]["card"]["exp_month"] == 9
    assert event["data"]["object"]["card"]["last4"] == "0005"
    assert event["data"]["previous_attributes"] == {
        "card": {"exp_month": 1, "exp_year": 2030, "last4": "4242"}
    }
    assert client.v1.payment_methods.retrieve(card).card.exp_year == 2033
    body = {"payment_method": "pm_nope", "exp_month": 1, "exp_year": 2030}
    unknown = raw("POST", "/_sandbox/card_updater", json=body)
    assert unknown.status_code == 400
    assert "pm_nope" in unknown.json()["error"]["message"]


def test_updating_a_payment_method_follows_stripes_rules(
    raw: Raw, client: stripe.StripeClient
) -> None:
    loose = client.v1.payment_methods.create(
        {"type": "card", "card": {"number": "4242424242424242", "exp_month": 5, "exp_year": 2030}}
    ).id
    refused = raw("POST", f"/v1/payment_methods/{loose}", data={"metadata[a]": "b"})
    assert refused.status_code == 400
    assert "customer" in refused.json()["error"]["message"]
    customer = _new_customer(client)
    client.v1.payment_methods.attach(loose, {"customer": customer})
    past = raw("POST", f"/v1/payment_methods/{loose}", data={"card[exp_year]": "2020"})
    assert past.status_code == 402
    assert past.json()["error"]["param"] == "card[exp_year]"
    assert _types(_events(client))[0] == "payment_method.attached"  # nothing for refusals


def test_replays_and_failures_before_the_write_emit_nothing_more(
    raw: Raw, sandbox: SandboxServer
) -> None:
    headers = {"Idempotency-Key": "only-once"}
    raw("POST", "/v1/customers", data={"name": "A"}, headers=headers)
    replayed = raw("POST", "/v1/customers", data={"name": "A"}, headers=headers)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    sandbox.faults.fail_next("POST", "/v1/customers", 1)  # before the write: nothing applied
    assert raw("POST", "/v1/customers", data={"name": "B"}).status_code == 500
    assert raw("POST", "/v1/customers", data={"email": "not an email"}).status_code == 400
    sandbox.faults.fail_next("POST", "/v1/customers", 1, after_apply=True)  # applied, then 500
    assert raw("POST", "/v1/customers", data={"name": "C"}).status_code == 500
    names = [e["data"]["object"]["name"] for e in raw("GET", "/v1/events").json()["data"]]
    assert names == ["C", "A"]


def test_events_belong_to_their_mode(sandbox: SandboxServer, client: stripe.StripeClient) -> None:
    live = make_client(sandbox, LIVE_KEY)
    live_customer = live.v1.customers.create({"name": "Live"}).id
    _new_customer(client)
    live_events = _events(live)
    assert [e["data"]["object"]["id"] for e in live_events] == [live_customer]
    assert live_events[0]["livemode"] is True
    assert all(e["livemode"] is False for e in _events(client))
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.events.retrieve(live_events[0]["id"])
    assert missing.value.http_status == 404


# --- retrieve, filters and cursors ----------------------------------------------------------
def test_retrieve_an_event_or_a_404(client: stripe.StripeClient, raw: Raw) -> None:
    _new_customer(client)
    listed = _events(client)[0]
    assert client.v1.events.retrieve(listed["id"]).to_dict() == listed
    missing = raw("GET", "/v1/events/evt_doesnotexist")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert (error["code"], error["message"]) == (
        "resource_missing",
        "No such event: 'evt_doesnotexist'",
    )


def _a_busy_account(client: stripe.StripeClient, clock: FakeClock) -> None:
    """Four customers a minute apart, each with a card; the second one updated twice."""
    customers = []
    for number in range(4):
        customers.append(_new_customer(client, name=f"c{number}"))
        client.v1.payment_methods.attach("pm_card_visa", {"customer": customers[-1]})
        clock.advance(60)
    client.v1.customers.update(customers[1], {"name": "renamed"})
    client.v1.customers.update(customers[1], {"metadata": {"plan": "pro"}})


def test_type_filters_exact_wildcard_and_a_list(
    client: stripe.StripeClient, clock: FakeClock, raw: Raw
) -> None:
    _a_busy_account(client, clock)
    everything = _events(client)
    assert len(everything) == 10
    assert _types(_events(client, type="customer.updated")) == ["customer.updated"] * 2
    assert set(_types(_events(client, type="customer.*"))) == {
        "customer.created",
        "customer.updated",
    }
    assert set(_types(_events(client, type="*.attached"))) == {"payment_method.attached"}
    assert _events(client, type="invoice.paid") == []
    both = _events(client, types=["customer.updated", "payment_method.attached"])
    assert both == [e for e in everything if e["type"] != "customer.created"]

    for params, message in (
        ({"type": "customer.created", "types[]": "customer.updated"}, "one of"),
        ({f"types[{n}]": "customer.created" for n in range(21)}, "at most 20"),
        ({"limit": "0"}, "between 1 and 100"),
        ({"limit": "101"}, "between 1 and 100"),
        ({"delivery_success": "maybe"}, "boolean"),
        ({"expand[]": "data.request"}, "cannot be expanded"),
        ({"starting_after": "evt_nope"}, "No such event"),
    ):
        refused = raw("GET", "/v1/events", params=params)
        assert refused.status_code in (400, 404), params
        assert message in refused.json()["error"]["message"], params


def test_created_ranges(client: stripe.StripeClient, clock: FakeClock) -> None:
    _a_busy_account(client, clock)
    second_minute = START + 60
    exactly = _events(client, created=second_minute)
    assert {e["created"] for e in exactly} == {second_minute}
    assert len(exactly) == 2  # the second customer and its card

    def times(created: Any) -> set[int]:
        return {event["created"] for event in _events(client, created=created)}

    assert times({"gt": START + 120}) == {START + 180, START + 240}
    assert times({"gte": START + 120, "lt": START + 180}) == {START + 120}
    assert times({"lte": START}) == {START}


def test_delivery_success_is_accepted(client: stripe.StripeClient) -> None:
    _new_customer(client)
    assert len(_events(client, delivery_success=True)) == 1
    assert _events(client, delivery_success=False) == []  # no webhook ever failed


@pytest.mark.parametrize(
    "filters",
    [{}, {"type": "customer.*"}, {"types": ["payment_method.attached", "customer.updated"]}],
)
def test_cursors_walk_both_ways(
    client: stripe.StripeClient, clock: FakeClock, filters: dict[str, Any]
) -> None:
    _a_busy_account(client, clock)
    newest_first = _events(client, **filters)
    assert len(newest_first) >= 4
    assert newest_first == sorted(newest_first, key=lambda e: e["created"], reverse=True)
    paged = [e.to_dict() for e in client.v1.events.list({"limit": 3, **filters}).auto_paging_iter()]
    assert paged == newest_first
    # From the oldest one, ending_before walks toward the newer ones, oldest first.
    oldest = newest_first[-1]["id"]
    forward = client.v1.events.list({"limit": 2, "ending_before": oldest, **filters})
    assert [e["id"] for e in forward.auto_paging_iter()] == [
        e["id"] for e in reversed(newest_first[:-1])
    ]
    # Each ending_before page holds the events just newer than the cursor, newest first.
    page = client.v1.events.list({"limit": 2, "ending_before": oldest, **filters})
    assert [e.id for e in page.data] == [e["id"] for e in newest_first[-3:-1]]
    assert page.has_more is True
    after = client.v1.events.list({"limit": 2, "starting_after": newest_first[0]["id"], **filters})
    assert [e.id for e in after.data] == [e["id"] for e in newest_first[1:3]]


# --- retention ---------------------------------------------------------------------------
def test_events_are_kept_30_days_of_the_sandbox_clock(
    client: stripe.StripeClient, clock: FakeClock, raw: Raw, sandbox: SandboxServer
) -> None:
    first = _new_customer(client, name="old")
    old_event = _events(client)[0]["id"]
    clock.advance(DAY)
    client.v1.customers.update(first, {"name": "newer"})
    clock.advance(RETENTION_SECONDS - DAY)  # the first event is exactly 30 days old
    assert len(_events(client)) == 2
    clock.advance(1)
    assert _types(_events(client)) == ["customer.updated"]
    assert raw("GET", f"/v1/events/{old_event}").status_code == 404
    cursor = raw("GET", "/v1/events", params={"ending_before": old_event})
    assert cursor.status_code == 404
    clock.advance(DAY)
    assert _events(client) == []
    assert sandbox.store.mode("test").events.stats()["listed"] == 0


def test_expired_events_leave_memory(sandbox: SandboxServer, clock: FakeClock) -> None:
    data = sandbox.store.mode("test")
    for number in range(3000):
        data.add_customer({"email": f"c{number}@example.com"})
    assert data.events.stats()["held"] == 3000
    clock.advance(RETENTION_SECONDS + 1)
    data.add_customer({"email": "fresh@example.com"})
    assert data.events.stats() == {
        "listed": 1,
        "pending": 0,
        "held": 1,
        "types": {"customer.created": 1},
    }


# --- late, out of order, dropped ------------------------------------------------------------
def test_a_late_event_is_listed_only_after_its_delay(
    client: stripe.StripeClient, clock: FakeClock, raw: Raw, sandbox: SandboxServer
) -> None:
    first = _new_customer(client, name="first")
    scheduled = raw("POST", "/_sandbox/events/delay", json={"seconds": 90})
    assert scheduled.status_code == 200, scheduled.text
    client.v1.customers.update(first, {"name": "late"})
    clock.advance(10)
    _new_customer(client, name="after")
    assert _types(_events(client)) == ["customer.created", "customer.created"]
    assert sandbox.store.mode("test").events.stats()["pending"] == 1
    clock.advance(80)  # 90 s after the update
    listed = _events(client)
    assert _types(listed) == ["customer.created", "customer.updated", "customer.created"]
    late = listed[1]
    assert late["created"] == START  # its own time: behind the event listed before it
    assert client.v1.events.retrieve(late["id"]).id == late["id"]


def test_an_out_of_order_event_lists_behind_events_already_listed(
    client: stripe.StripeClient, clock: FakeClock, sandbox: SandboxServer
) -> None:
    _new_customer(client, name="a")
    clock.advance(30)
    _new_customer(client, name="b")
    newest_seen = _events(client)[0]
    sandbox.event_faults.backdate_next(45)
    clock.advance(30)
    _new_customer(client, name="backdated")  # at START + 60, created START + 15
    # A consumer walking forward from what it saw never meets it ...
    newer = client.v1.events.list({"ending_before": newest_seen["id"]})
    assert newer.data == []
    # ... but a listing by created time with an overlap does.
    overlap = _events(client, created={"gte": newest_seen["created"] - 60})
    assert [e["data"]["object"]["name"] for e in overlap] == ["b", "backdated", "a"]
    assert overlap[1]["created"] == START + 15


def test_dropped_events_are_never_generated(
    client: stripe.StripeClient, raw: Raw, sandbox: SandboxServer
) -> None:
    assert raw("POST", "/_sandbox/events/drop", json={"count": 1}).status_code == 200
    customer = _new_customer(client, name="unannounced")
    client.v1.customers.update(customer, {"name": "announced"})
    assert _types(_events(client)) == ["customer.updated"]
    # A whole write: a customer created with a card emits two events, both dropped.
    assert raw("POST", "/_sandbox/events/drop", json={"writes": True}).status_code == 200
    _new_customer(client, payment_method="pm_card_visa")
    _new_customer(client, name="next")
    assert _types(_events(client)) == ["customer.created", "customer.updated"]
    assert sandbox.event_faults.settings()["scheduled"] == {
        "delays": [],
        "backdates": [],
        "drop_events": 0,
        "drop_writes": 0,
    }


def test_the_event_controls_refuse_bad_input(raw: Raw) -> None:
    for route, body, message in (
        ("events/drop", {"count": 0}, "count must be"),
        ("events/delay", {"seconds": -1}, "seconds must be"),
        ("events/backdate", {}, "seconds"),
        ("events/config", {"drop_rate": 2}, "between 0 and 1"),
        ("events/config", {"lateness": 1}, "unknown event fault setting"),
    ):
        refused = raw("POST", "/_sandbox/" + route, json=body)
        assert refused.status_code == 400, route
        assert message in refused.json()["error"]["message"], route


def test_random_faults_never_list_an_event_twice(
    client: stripe.StripeClient, clock: FakeClock, raw: Raw
) -> None:
    config = {
        "seed": 7,
        "drop_rate": 0.1,
        "delay_rate": 0.3,
        "max_delay_seconds": 20,
        "backdate_rate": 0.3,
        "max_backdate_seconds": 20,
    }
    assert raw("POST", "/_sandbox/events/config", json=config).status_code == 200
    customer = _new_customer(client)
    for number in range(60):
        client.v1.customers.update(customer, {"metadata": {"n": str(number)}})
        clock.advance(1)
    clock.advance(30)  # every late event is due
    listed = _events(client)
    ids = [e["id"] for e in listed]
    assert len(ids) == len(set(ids))
    assert 30 < len(listed) < 61  # some dropped, none twice
    # Late and backdated events still list in `created` order.
    assert [e["created"] for e in listed] == sorted((e["created"] for e in listed), reverse=True)
    settings = raw("GET", "/_sandbox/events").json()
    assert settings["faults"]["drop_rate"] == 0.1
    assert settings["test"]["listed"] == len(listed)
    raw("POST", "/_sandbox/events/clear")
    assert raw("GET", "/_sandbox/events").json()["faults"]["drop_rate"] == 0.0


def test_reset_forgets_events_and_their_faults(raw: Raw, client: stripe.StripeClient) -> None:
    _new_customer(client)
    raw("POST", "/_sandbox/events/drop", json={"count": 5})
    raw("POST", "/_sandbox/reset")
    _new_customer(client)
    assert len(_events(client)) == 1


# --- rate limits and the request log ----------------------------------------------------------
def test_events_endpoints_are_rate_limited_and_logged(raw: Raw, sandbox: SandboxServer) -> None:
    sandbox.limits = RateLimits(per_endpoint=2)
    statuses = [raw("GET", "/v1/events").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert raw("GET", "/v1/events/evt_x").status_code == 404  # another endpoint's budget
    logged = [(e.method, e.path, e.status) for e in sandbox.request_log.entries()]
    assert logged[-4:] == [
        ("GET", "/v1/events", 200),
        ("GET", "/v1/events", 200),
        ("GET", "/v1/events", 429),
        ("GET", "/v1/events/evt_x", 404),
    ]


# --- history of loaded and seeded accounts -----------------------------------------------------
def test_a_load_emits_nothing_unless_asked_for_its_history(
    raw: Raw, client: stripe.StripeClient, sandbox: SandboxServer
) -> None:
    records = [
        customer_record("cus_recent", START - 5 * DAY, default_payment_method="pm_recent"),
        customer_record("cus_old", START - 90 * DAY),
    ]
    card = {"brand": "visa", "last4": "4242", "exp_month": 1, "exp_year": 2030}
    method = {"id": "pm_recent", "created": START - 4 * DAY, "customer": "cus_recent"}
    methods = [{**method, "card": {**card, "fingerprint": "f" * 16}}]
    raw("POST", "/_sandbox/load", json={"customers": records, "payment_methods": methods})
    assert _events(client) == []
    loaded = raw(
        "POST",
        "/_sandbox/load",
        json={"mode": "live", "customers": records, "payment_methods": methods, "events": True},
    )
    assert loaded.json()["events"] == 3
    created, attached, default_set = reversed(_events(make_client(sandbox, LIVE_KEY)))
    assert created["type"] == "customer.created"
    assert created["created"] == START - 5 * DAY
    # The card came four days later: the customer had no default until then.
    assert created["data"]["object"]["invoice_settings"]["default_payment_method"] is None
    assert (attached["type"], attached["created"]) == ("payment_method.attached", START - 4 * DAY)
    assert default_set["type"] == "customer.updated"
    assert default_set["data"]["previous_attributes"] == {
        "invoice_settings": {"default_payment_method": None}
    }


@pytest.fixture(scope="module")
def seeded() -> Iterator[SandboxServer]:
    config = SandboxConfig(
        limits=RateLimits(enabled=False), clock=FakeClock(START), seed_customers=3000, seed=4
    )
    with SandboxServer(config) as server:
        yield server


def test_a_seeded_account_has_its_last_30_days_of_history(seeded: SandboxServer) -> None:
    client = make_client(seeded)
    events = _events(client)
    assert events, "a seeded account comes with events"
    assert all(START - RETENTION_SECONDS <= e["created"] <= START for e in events)
    data = seeded.store.mode("test")
    recent = {
        record.id
        for record in data.customers.values()
        if record.created >= START - RETENTION_SECONDS
    }
    created = {e["data"]["object"]["id"] for e in events if e["type"] == "customer.created"}
    assert created == recent
    deleted = {e["data"]["object"]["id"] for e in events if e["type"] == "customer.deleted"}
    assert deleted == {r.id for r in data.customers.values() if r.deleted}
    assert {"payment_method.attached", "customer.updated"} <= set(_types(events))
    recent_cards = {
        m.id for m in data.payment_methods.values() if m.created >= START - RETENTION_SECONDS
    }
    attached = {e["data"]["object"]["id"] for e in events if e["type"] == "payment_method.attached"}
    assert attached == recent_cards


def test_seeded_history_replays_to_the_present(seeded: SandboxServer) -> None:
    """Each customer's latest event shows it as it is now: a consumer applying the events
    in order ends where a full listing is."""
    client = make_client(seeded)
    latest: dict[str, dict[str, Any]] = {}
    for event in reversed(_events(client, type="customer.*")):
        latest[event["data"]["object"]["id"]] = event
    assert latest
    for customer_id, event in latest.items():
        now = client.v1.customers.retrieve(customer_id).to_dict()
        if now.get("deleted"):
            assert event["type"] == "customer.deleted"
        else:
            assert event["data"]["object"] == now, customer_id


def test_the_same_seed_gives_the_same_history(seeded: SandboxServer) -> None:
    config = SandboxConfig(
        limits=RateLimits(enabled=False), clock=FakeClock(START), seed_customers=3000, seed=4
    )
    with SandboxServer(config) as again:
        first = _events(make_client(seeded))
        second = _events(make_client(again))
    assert [e["id"] for e in first] == [e["id"] for e in second]
    assert first == second


# --- the listing's cost --------------------------------------------------------------------
def test_pages_stay_correct_deep_in_a_large_log() -> None:
    clock = FakeClock(START)
    log = EventLog(clock, EventFaults())
    kinds = ("customer.created", "customer.updated", "payment_method.attached")
    history = [
        (f"evt_{n:08d}", kinds[n % 3], START - 100_000 + n // 2, CustomerRecord("c", 0, 0), None)
        for n in range(60_000)
    ]
    assert log.load(history) == 60_000
    deep = log.get("evt_00006000")
    assert deep is not None
    page, has_more = log.page(limit=100, starting_after=deep)
    assert [e.id for e in page] == [f"evt_{n:08d}" for n in range(5999, 5899, -1)]
    assert has_more
    page, _ = log.page(
        limit=4, starting_after=deep, types=["customer.updated", "payment_method.attached"]
    )
    assert [e.id for e in page] == ["evt_00005999", "evt_00005998", "evt_00005996", "evt_00005995"]
    page, has_more = log.page(limit=3, ending_before=deep, type_pattern="customer.*")
    assert [e.id for e in page] == ["evt_00006004", "evt_00006003", "evt_00006001"]
    assert has_more
