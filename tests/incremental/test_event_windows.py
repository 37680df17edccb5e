"""Events paged by concurrent `created` windows (reconcile.listing.event_windows) against the
sandbox over HTTP: the same events, in the same order, as one cursor lists them, whatever
the number of workers and however the events cluster; faster under latency; an error of
any window ends the listing with that error."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from reconcile.errors import ReconcileError
from reconcile.listing.event_windows import list_events_concurrently, window_cuts
from reconcile.rules.events import EVENT_TYPES
from reconcile.stripe_api.gateway import StripeGateway
from tests.incremental.world import World, fast_gateway


def _create(world: World, number: int) -> str:
    params = {"email": f"c{number}@example.com", "metadata": {"user_id": str(number)}}
    return str(world.client.v1.customers.create(cast(Any, params)).id)


def _clustered_events(world: World) -> int:
    """A burst in one second, a sparse stretch a second apart, an event back-dated behind
    those already listed, a second burst: returns the `since` that covers them."""
    since = int(world.sandbox.clock()) - 2
    ids = [_create(world, number) for number in range(23)]
    for number, customer_id in enumerate(ids[:12]):
        world.advance(1)
        world.client.v1.customers.update(customer_id, {"name": f"Name {number}"})
    world.advance(3)
    world.sandbox.event_faults.backdate_next(9)
    world.client.v1.customers.update(ids[0], {"email": "late@example.com"})
    for number in range(17):
        world.client.v1.customers.update(ids[number], {"metadata": {"plan": "pro"}})
    world.client.v1.customers.delete(ids[22])
    return since


def _one_cursor(gateway: StripeGateway, since: int, page_size: int = 100) -> list[str]:
    listed = gateway.list_events(created_gte=since, types=EVENT_TYPES, page_size=page_size)
    return [str(e["id"]) for e in listed]


@pytest.mark.parametrize("workers", [1, 3, 8])
def test_windows_list_the_events_one_cursor_lists_in_its_order(world: World, workers: int) -> None:
    since = _clustered_events(world)
    gateway = fast_gateway(world.settings)
    expected = _one_cursor(gateway, since)
    assert len(expected) == 23 + 12 + 1 + 17 + 1
    listed = list_events_concurrently(
        gateway,
        since=since,
        types=EVENT_TYPES,
        workers=workers,
        page_size=4,
    )
    assert [str(e["id"]) for e in listed] == expected


def test_a_few_events_cost_one_request_as_with_one_cursor(world: World) -> None:
    since = int(world.sandbox.clock())
    world.advance(86_400)
    ids = [_create(world, number) for number in range(3)]
    gateway = fast_gateway(world.settings)
    listed = list_events_concurrently(gateway, since=since, types=EVENT_TYPES, workers=16)
    assert [str(e["data"]["object"]["id"]) for e in listed] == ids[::-1]
    assert gateway.stats.by_endpoint == {"GET /v1/events": 1}


def test_a_dense_stretch_is_paged_by_several_cursors(world: World) -> None:
    # 300 events over 60 seconds after a quiet day: the first page shows how dense they
    # are, and the rest is cut for the other cursors.
    since = int(world.sandbox.clock())
    world.advance(86_400)
    for number in range(60):
        world.advance(1)
        customer_id = _create(world, number)
        for name in "ABCD":
            world.client.v1.customers.update(customer_id, {"name": name})
    gateway = fast_gateway(world.settings)
    expected = _one_cursor(gateway, since)
    world.sandbox.latency_ms = 60
    try:
        started = time.monotonic()
        _one_cursor(gateway, since, page_size=5)  # 60 pages, one after another
        alone = time.monotonic() - started
        started = time.monotonic()
        listed = list_events_concurrently(
            gateway,
            since=since,
            types=EVENT_TYPES,
            workers=8,
            page_size=5,
        )
        together = time.monotonic() - started
    finally:
        world.sandbox.latency_ms = 0
    assert [str(e["id"]) for e in listed] == expected
    assert together < alone * 0.6, (together, alone)
    # Each piece costs a short last page, no more: 60 pages by one cursor.
    assert gateway.stats.by_endpoint["GET /v1/events"] <= 60 + 60 + 60 * 1.5


def test_an_error_in_one_window_ends_the_listing_with_it(world: World) -> None:
    since = _clustered_events(world)
    gateway = fast_gateway(world.settings)
    world.sandbox.faults.fail_next("GET", "/v1/events", 1, status=400)
    try:
        with pytest.raises(ReconcileError):
            list_events_concurrently(
                gateway,
                since=since,
                types=EVENT_TYPES,
                workers=4,
                page_size=4,
            )
    finally:
        world.sandbox.faults.clear()


def test_window_cuts_split_a_span_evenly_in_whole_seconds() -> None:
    assert window_cuts(100, 200, 4) == [125, 150, 175]
    assert window_cuts(100, 103, 8) == [101, 102]  # at most one window per second
    assert window_cuts(100, 101, 8) == []
    assert window_cuts(100, 100, 3) == []
    assert window_cuts(100, 200, 1) == []


def test_events_come_as_stripe_sent_them_and_the_sdk_still_walks_the_pages(world: World) -> None:
    # Read as JSON, not through the SDK's objects: every field the SDK gives, a previous
    # attribute and a nested object too, and every page followed (3 events a page).
    since = _clustered_events(world)
    gateway = fast_gateway(world.settings)
    params: dict[str, Any] = {"created": {"gte": since}, "types": list(EVENT_TYPES), "limit": 3}
    by_sdk = [
        event.to_dict()
        for event in world.client.v1.events.list(cast(Any, params)).auto_paging_iter()
    ]
    requests_before = gateway.stats.total

    listed = list(gateway.list_events(created_gte=since, types=EVENT_TYPES, page_size=3))

    assert listed == by_sdk
    assert all(type(event) is dict for event in listed)
    assert any(event["data"].get("previous_attributes") for event in listed)
    assert gateway.stats.total - requests_before == -(-len(listed) // 3)
