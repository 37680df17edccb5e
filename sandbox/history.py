"""The events an account already has when the sandbox starts with it.

A loaded or seeded account did not come about through the sandbox's API, yet Stripe would
list the last 30 days of its history: `customer.created` for customers created in that
window, `payment_method.attached` for cards attached in it, the `customer.updated` that
made such a card the default, `customer.subscription.created`, and, for a seeded account,
the deletions of its deleted customers and a few updates of older customers. Each event
shows its object as it was then, consistently with the later events: a customer created
before its default card was attached shows no default until the update that set it.

Built from the loaded records in one pass and stored with one sort (`EventLog.load`), so
seeding stays about as fast as before.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sandbox.events import RETENTION_SECONDS
from sandbox.store import CustomerRecord, ModeStore

__all__ = ["SEEDED_UPDATE_SHARE", "add_history", "add_seeded_history"]

# Share of a seeded account's older customers with a `customer.updated` in the window.
SEEDED_UPDATE_SHARE = 0.005
_ALNUM = (string.ascii_letters + string.digits).encode()
_BYTE_TO_ALNUM = bytes((_ALNUM * 5)[:256])
_PLANS = ("free", "pro", "team", "enterprise")

HistoryEvent = tuple[str, str, int, Any, dict[str, Any] | None]
# The previous attributes of every "default card set" update: one object for them all
# (events are only ever read), which saves a dict per event on a large account.
_DEFAULT_SET: dict[str, Any] = {"invoice_settings": {"default_payment_method": None}}


class _History:
    def __init__(self, data: ModeStore, rng: random.Random) -> None:
        self.data = data
        self.rng = rng
        self.now = int(data.time())
        self.oldest = self.now - RETENTION_SECONDS
        self.events: list[HistoryEvent] = []
        self.touched: set[str] = set()  # customers with an event
        self.touched_by_creation: set[str] = set()
        # (when, customer) of defaults set by a card attached in the window: added after
        # every attach event, so an update never lists before the attach of its second.
        self.pending_defaults: list[tuple[int, CustomerRecord]] = []

    def event_id(self) -> str:
        raw = self.rng.getrandbits(8 * 24).to_bytes(24, "little")
        return "evt_" + raw.translate(_BYTE_TO_ALNUM).decode("ascii")

    def recent(self, created: int) -> bool:
        return self.oldest <= created <= self.now

    def add(
        self, event_type: str, created: int, snapshot: Any, previous: dict[str, Any] | None = None
    ) -> None:
        self.events.append((self.event_id(), event_type, created, snapshot, previous))

    def when_default_was_set(self, customer: CustomerRecord) -> int | None:
        """When a card attached within the window became the customer's default; None when
        the default (if any) predates the window or the customer."""
        method_id = customer.default_payment_method
        method = self.data.payment_methods.get(method_id) if method_id else None
        if method is None or method.customer != customer.id:
            return None
        if not self.recent(method.created) or method.created < customer.created:
            return None
        return method.created

    def customers(self, ids: Iterable[str]) -> None:
        """customer.created for those created in the window, and the default card's
        customer.updated for every customer whose default was attached in it."""
        for customer_id in ids:
            customer = self.data.customers.get(customer_id)
            if customer is None:
                continue
            default_set_at = self.when_default_was_set(customer)
            if self.recent(customer.created):
                snapshot = customer.snapshot()
                snapshot.deleted = False
                if default_set_at is not None:
                    snapshot.default_payment_method = None
                self.add("customer.created", customer.created, snapshot)
                self.touched.add(customer.id)
                self.touched_by_creation.add(customer.id)
            if default_set_at is not None:
                self.touched.add(customer.id)
                self.pending_defaults.append((default_set_at, customer))

    def payment_methods(self, ids: Iterable[str]) -> None:
        for method_id in ids:
            method = self.data.payment_methods.get(method_id)
            if method is None or method.customer is None or not self.recent(method.created):
                continue
            self.add("payment_method.attached", method.created, method.snapshot())
            self.touched.add(method.customer)

    def defaults(self) -> None:
        for when, customer in self.pending_defaults:
            snapshot = customer.snapshot()
            snapshot.deleted = False
            self.add("customer.updated", when, snapshot, _DEFAULT_SET)

    def subscriptions(self, ids: Iterable[str]) -> None:
        for subscription_id in ids:
            subscription = self.data.subscriptions.get(subscription_id)
            if subscription is not None and self.recent(subscription.created):
                self.add(
                    "customer.subscription.created",
                    subscription.created,
                    subscription.snapshot(),
                )

    def store(self) -> int:
        # Stable: events of the same second keep the order they were added in.
        self.events.sort(key=lambda event: event[2])
        return self.data.events.load(self.events)


def add_history(
    data: ModeStore,
    customers: Sequence[Mapping[str, Any]],
    payment_methods: Sequence[Mapping[str, Any]] = (),
    subscriptions: Sequence[Mapping[str, Any]] = (),
    *,
    seed: int = 0,
) -> int:
    """The last 30 days of events of records just bulk-loaded into `data` (the dicts given
    to `bulk_load`); returns how many events were stored."""
    history = _history(data, seed)
    history.customers(str(item["id"]) for item in customers)
    history.payment_methods(str(item["id"]) for item in payment_methods if item.get("id"))
    history.defaults()
    history.subscriptions(str(item["id"]) for item in subscriptions if item.get("id"))
    return history.store()


def add_seeded_history(
    data: ModeStore,
    customers: Sequence[Mapping[str, Any]],
    payment_methods: Sequence[Mapping[str, Any]],
    deleted_customer_ids: Sequence[str],
    *,
    seed: int,
) -> int:
    """`add_history` for a generated account, plus the deletions of its deleted customers
    and a `customer.updated` for about SEEDED_UPDATE_SHARE of its older customers, at
    repeatable times within the window (the same seed gives the same events)."""
    history = _history(data, seed)
    recent_customers = [str(c["id"]) for c in customers if history.recent(int(c["created"]))]
    recent_methods = [str(m["id"]) for m in payment_methods if history.recent(int(m["created"]))]
    history.customers(recent_customers)
    history.payment_methods(recent_methods)
    # Older customers with a card attached in the window: their default may date from it.
    owners = dict.fromkeys(
        method.customer
        for method in (data.payment_methods[m] for m in recent_methods)
        if method.customer is not None
    )
    history.customers(owner for owner in owners if owner not in history.touched_by_creation)
    history.defaults()
    for customer_id in deleted_customer_ids:
        customer = data.customers.get(customer_id)
        if customer is None or not customer.deleted:
            continue
        start = max(customer.created, history.oldest)
        if start <= history.now:
            when = history.rng.randint(start, history.now)
            snapshot = customer.snapshot()
            snapshot.deleted = False
            history.add("customer.deleted", when, snapshot)
            history.touched.add(customer_id)
    count = round(len(customers) * SEEDED_UPDATE_SHARE)
    for position in history.rng.sample(range(len(customers)), min(count, len(customers))):
        customer = data.customers.get(str(customers[position]["id"]))
        if customer is None or customer.deleted or customer.id in history.touched:
            continue
        if customer.created > history.oldest:
            continue
        when = history.rng.randint(history.oldest + 1, history.now)
        change = _seeded_change(history, customer)
        history.add("customer.updated", when, customer.snapshot(), change)
        history.touched.add(customer.id)
    return history.store()


def _history(data: ModeStore, seed: int) -> _History:
    return _History(data, random.Random(f"sandbox-history-{seed}-{data.mode}"))


def _seeded_change(history: _History, customer: CustomerRecord) -> dict[str, Any]:
    """Old values that lead to the customer's present state: a plan change, or a phone
    number or description set or cleared."""
    plan = customer.metadata.get("plan")
    if plan is not None:
        others = [p for p in _PLANS if p != plan]
        old_plan = others[int(history.rng.random() * len(others))]
        return {"metadata": {"plan": old_plan if history.rng.random() < 0.7 else None}}
    if customer.phone is not None:
        return {"phone": None}
    if customer.description is None:
        return {"description": "Imported from the billing v1 system"}
    return {"description": None}
