"""In-memory Stripe state, one `ModeStore` per key mode, with a sorted index for paging.

Customers live in a list sorted by `key` (created, then insertion order), so a list page is
two bisections and a slice at any depth: O(log N + page size). Records are compact slotted
objects; the full Stripe JSON is built only when a record is served (see objects.py).

Every write through a `ModeStore` method emits Stripe's events into the mode's `EventLog`
(events.py); bulk loads do not (they put an account in place; whoever loads one adds the
events it comes with, history.py).
"""

from __future__ import annotations

import bisect
import contextlib
import secrets
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandbox.clock import SandboxClock
from sandbox.events import EventFaults, EventLog, changed_keys
from sandbox.ordering import SEQ_BITS, key_bounds, sort_key

__all__ = [
    "IDEMPOTENCY_TTL_SECONDS",
    "MODES",
    "PAYMENT_METHOD_TYPES",
    "SUBSCRIPTION_STATUSES",
    "TERMINAL_SUBSCRIPTION_STATUSES",
    "CustomerRecord",
    "IdempotentResult",
    "ModeStore",
    "PaymentMethodRecord",
    "SandboxStore",
    "SubscriptionRecord",
    "new_id",
    "sort_key",
]

MODES = ("test", "live")
_ID_ALPHABET = string.ascii_letters + string.digits
_IDEMPOTENCY_CAPACITY = 100_000
# Stripe keeps a key's result for at least 24 hours, then forgets it: the same key then
# makes a new request.
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
SUBSCRIPTION_STATUSES = frozenset(
    {
        "active",
        "trialing",
        "past_due",
        "unpaid",
        "incomplete",
        "incomplete_expired",
        "canceled",
        "paused",
    }
)
# A subscription in these statuses never bills again; deleting its customer leaves it as is.
TERMINAL_SUBSCRIPTION_STATUSES = frozenset({"canceled", "incomplete_expired"})
# The payment method types the sandbox stores; `card` is the default everywhere.
PAYMENT_METHOD_TYPES = ("card", "sepa_debit", "us_bank_account")


def new_id(prefix: str, length: int = 14) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


@dataclass(slots=True, eq=False)
class CustomerRecord:
    id: str
    created: int
    key: int
    email: str | None = None
    name: str | None = None
    phone: str | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    default_payment_method: str | None = None
    balance: int = 0  # Stripe's customer balance, in the smallest currency unit
    deleted: bool = False

    def snapshot(self) -> CustomerRecord:
        """A copy as the customer is now (what an event shows); later writes leave it be."""
        return CustomerRecord(
            self.id,
            self.created,
            self.key,
            self.email,
            self.name,
            self.phone,
            self.description,
            dict(self.metadata),
            self.default_payment_method,
            self.balance,
            self.deleted,
        )


@dataclass(slots=True, eq=False)
class PaymentMethodRecord:
    id: str
    created: int
    key: int
    customer: str | None
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    fingerprint: str
    funding: str = "credit"
    metadata: dict[str, str] = field(default_factory=dict)
    cvc_check: str | None = None
    type: str = "card"
    # Top-level keys of the served JSON beyond a card's: `sepa_debit` or `us_bank_account`
    # for bank methods, `billing_details` when given. None for most cards (kept compact).
    extra: dict[str, Any] | None = None

    def snapshot(self) -> PaymentMethodRecord:
        return PaymentMethodRecord(
            self.id,
            self.created,
            self.key,
            self.customer,
            self.brand,
            self.last4,
            self.exp_month,
            self.exp_year,
            self.fingerprint,
            self.funding,
            dict(self.metadata),
            self.cvc_check,
            self.type,
            None if self.extra is None else dict(self.extra),
        )


@dataclass(slots=True, eq=False)
class SubscriptionRecord:
    """Just enough of a subscription for the maintenance jobs: whose, which prices, status."""

    id: str
    created: int
    customer: str
    prices: list[tuple[str, int]]  # (price id, quantity)
    status: str = "active"
    metadata: dict[str, str] = field(default_factory=dict)
    canceled_at: int | None = None
    trial_end: int | None = None

    def snapshot(self) -> SubscriptionRecord:
        return SubscriptionRecord(
            self.id,
            self.created,
            self.customer,
            list(self.prices),
            self.status,
            dict(self.metadata),
            self.canceled_at,
            self.trial_end,
        )


@dataclass(frozen=True, slots=True)
class IdempotentResult:
    fingerprint: str
    status: int
    body: bytes
    stored_at: float = 0.0  # the sandbox clock when the first request executed
    # That request's id, sent back as `Original-Request` on replays (a header seen on
    # Stripe's answers; not confirmed in its documentation).
    request_id: str = ""


def _by_key(record: CustomerRecord) -> int:
    return record.key


class ModeStore:
    """The data of one mode (test or live); never touches the other mode's records."""

    def __init__(
        self, mode: str, clock: Callable[[], float], event_faults: EventFaults | None = None
    ) -> None:
        self.mode = mode
        self._clock = clock
        self._seq = 0
        self.events = EventLog(clock, event_faults or EventFaults())
        self.customers: dict[str, CustomerRecord] = {}  # deleted ones stay, for retrieve
        self._index: list[CustomerRecord] = []  # live customers, ascending by key
        self._by_email: dict[str, list[CustomerRecord]] = {}  # lowercased email
        self._metadata_indexes: dict[str, dict[str, list[CustomerRecord]]] = {}  # lazy
        self.payment_methods: dict[str, PaymentMethodRecord] = {}
        self._pms_by_customer: dict[str, list[PaymentMethodRecord]] = {}
        self.subscriptions: dict[str, SubscriptionRecord] = {}
        self._subs_by_customer: dict[str, list[SubscriptionRecord]] = {}
        self.idempotency: OrderedDict[str, IdempotentResult] = OrderedDict()

    # --- bookkeeping -------------------------------------------------------------------
    def _next_key(self, created: int) -> int:
        self._seq += 1
        return sort_key(created, self._seq)

    def now(self) -> int:
        return int(self._clock())

    def time(self) -> float:
        """The sandbox clock, unrounded."""
        return self._clock()

    def __len__(self) -> int:
        return len(self._index)

    def _index_insert(self, record: CustomerRecord) -> None:
        # New customers are the newest, so this is an append in the common case.
        if not self._index or self._index[-1].key < record.key:
            self._index.append(record)
        else:
            bisect.insort(self._index, record, key=_by_key)
        self._secondary_insert(record)

    def _secondary_insert(self, record: CustomerRecord) -> None:
        if record.email is not None:
            self._by_email.setdefault(record.email.lower(), []).append(record)
        for key, index in self._metadata_indexes.items():
            value = record.metadata.get(key)
            if value is not None:
                index.setdefault(value.lower(), []).append(record)

    def _index_remove(self, record: CustomerRecord) -> None:
        position = bisect.bisect_left(self._index, record.key, key=_by_key)
        if position < len(self._index) and self._index[position] is record:
            del self._index[position]
        self._secondary_remove(record)

    def _secondary_remove(self, record: CustomerRecord) -> None:
        if record.email is not None:
            _remove_from(self._by_email, record.email.lower(), record)
        for key, index in self._metadata_indexes.items():
            value = record.metadata.get(key)
            if value is not None:
                _remove_from(index, value.lower(), record)

    # --- customers ---------------------------------------------------------------------
    def add_customer(self, fields: Mapping[str, Any], created: int | None = None) -> CustomerRecord:
        when = self.now() if created is None else created
        customer_id = str(fields.get("id") or "")
        while not customer_id or customer_id in self.customers:
            customer_id = new_id("cus_")
        record = CustomerRecord(
            id=customer_id,
            created=when,
            key=self._next_key(when),
            email=fields.get("email"),
            name=fields.get("name"),
            phone=fields.get("phone"),
            description=fields.get("description"),
            metadata=dict(fields.get("metadata") or {}),
            default_payment_method=fields.get("default_payment_method"),
            balance=int(fields.get("balance") or 0),
        )
        self.customers[record.id] = record
        self._index_insert(record)
        self.events.emit("customer.created", record)
        return record

    def update_customer(self, record: CustomerRecord, changes: Mapping[str, Any]) -> None:
        """Apply already-validated changes; the email and metadata indexes follow them (the
        sorted index does not move: `created` never changes). A real change emits
        `customer.updated` with the changed attributes' old values."""
        previous = _customer_previous(record, changes)
        self._secondary_remove(record)
        for name, value in changes.items():
            setattr(record, name, value)
        self._secondary_insert(record)
        if previous:
            self.events.emit("customer.updated", record, previous)

    def delete_customer(self, record: CustomerRecord) -> None:
        self._index_remove(record)
        # Stripe cancels a deleted customer's subscriptions at once, whatever their status.
        for subscription in self._subs_by_customer.get(record.id, ()):
            if subscription.status not in TERMINAL_SUBSCRIPTION_STATUSES:
                self.set_subscription_status(subscription, "canceled")
        # The event shows the whole customer as it was, without `deleted` (as Stripe's do).
        self.events.emit("customer.deleted", record)
        record.deleted = True
        # Stripe detaches the payment methods too; it is not confirmed that it emits
        # payment_method.detached for them, so the sandbox does not.
        for method in self._pms_by_customer.pop(record.id, []):
            method.customer = None

    def list_customers(
        self,
        *,
        limit: int,
        created: int | Mapping[str, int] | None = None,
        email: str | None = None,
        starting_after: CustomerRecord | None = None,
        ending_before: CustomerRecord | None = None,
    ) -> tuple[list[CustomerRecord], bool]:
        """A page, newest first, and whether more lie beyond it in the paging direction."""
        low, high = key_bounds(created)
        if starting_after is not None:
            high = min(high, starting_after.key)
        if ending_before is not None:
            low = max(low, ending_before.key + 1)
        if email is not None:
            candidates = sorted(
                (r for r in self._by_email.get(email.lower(), ()) if r.email == email),
                key=_by_key,
            )
        else:
            candidates = self._index
        lo = bisect.bisect_left(candidates, low, key=_by_key)
        hi = bisect.bisect_left(candidates, high, key=_by_key)
        if ending_before is not None and starting_after is None:
            end = min(hi, lo + limit)
            page = candidates[lo:end]
            has_more = end < hi
        else:
            start = max(lo, hi - limit)
            page = candidates[start:hi]
            has_more = start > lo
        page.reverse()
        return page, has_more

    def newest_first(self) -> Iterator[CustomerRecord]:
        return reversed(self._index)

    def by_email_ci(self, email: str) -> list[CustomerRecord]:
        return list(self._by_email.get(email.lower(), ()))

    def by_metadata_ci(self, key: str, value: str) -> list[CustomerRecord]:
        index = self._metadata_indexes.get(key)
        if index is None:
            index = {}
            for record in self._index:
                found = record.metadata.get(key)
                if found is not None:
                    index.setdefault(found.lower(), []).append(record)
            self._metadata_indexes[key] = index
        return list(index.get(value.lower(), ()))

    # --- payment methods ---------------------------------------------------------------
    def add_payment_method(
        self, fields: Mapping[str, Any], created: int | None = None
    ) -> PaymentMethodRecord:
        """`fields` in Stripe's shape: `type` (default `card`) and the object of that type
        (`card`, `sepa_debit` or `us_bank_account`), `metadata`, optional `id`, `customer`
        and `billing_details`."""
        when = self.now() if created is None else created
        method_id = str(fields.get("id") or "")
        while not method_id or method_id in self.payment_methods:
            method_id = new_id("pm_", 24)
        kind = str(fields.get("type") or "card")
        if kind not in PAYMENT_METHOD_TYPES:
            raise ValueError(
                f"payment method {method_id}: type {kind!r} is not one the sandbox stores "
                f"(use one of {', '.join(PAYMENT_METHOD_TYPES)})"
            )
        extra: dict[str, Any] | None = None
        if fields.get("billing_details"):
            extra = {"billing_details": dict(fields["billing_details"])}
        if kind == "card":
            card = fields["card"]
            record = PaymentMethodRecord(
                id=method_id,
                created=when,
                key=self._next_key(when),
                customer=None,
                brand=card["brand"],
                last4=card["last4"],
                exp_month=int(card["exp_month"]),
                exp_year=int(card["exp_year"]),
                fingerprint=card["fingerprint"],
                funding=card.get("funding", "credit"),
                metadata=dict(fields.get("metadata") or {}),
                cvc_check=fields.get("cvc_check"),
                extra=extra,
            )
        else:
            details = dict(fields[kind])
            # Bank methods have no brand or expiry: the card fields stay empty.
            record = PaymentMethodRecord(
                id=method_id,
                created=when,
                key=self._next_key(when),
                customer=None,
                brand="",
                last4=str(details.get("last4") or ""),
                exp_month=0,
                exp_year=0,
                fingerprint=str(details.get("fingerprint") or ""),
                funding="",
                metadata=dict(fields.get("metadata") or {}),
                type=kind,
                extra={**(extra or {}), kind: details},
            )
        self.payment_methods[record.id] = record
        customer = fields.get("customer")
        if customer:
            self.attach(record, customer)
        return record

    def attach(self, method: PaymentMethodRecord, customer_id: str) -> None:
        method.customer = customer_id
        self._pms_by_customer.setdefault(customer_id, []).append(method)
        self.events.emit("payment_method.attached", method)

    def detach(self, method: PaymentMethodRecord) -> None:
        """Detach; a customer whose default it was loses its default, which emits
        `customer.updated` (invoice_settings) after `payment_method.detached`."""
        if method.customer is None:
            return
        owner = self.customers.get(method.customer)
        methods = self._pms_by_customer.get(method.customer, [])
        if method in methods:
            methods.remove(method)
        previous_owner = method.customer
        method.customer = None
        self.events.emit("payment_method.detached", method, {"customer": previous_owner})
        if owner is not None and owner.default_payment_method == method.id:
            self.update_customer(owner, {"default_payment_method": None})

    def update_payment_method(
        self, method: PaymentMethodRecord, changes: Mapping[str, Any], *, automatic: bool = False
    ) -> None:
        """Apply already-validated changes: `metadata` (merged already), `exp_month`,
        `exp_year`, `last4`, `billing_details`. Emits `payment_method.updated`, or with
        `automatic` (a card network's updater) `payment_method.automatically_updated`."""
        previous: dict[str, Any] = {}
        card: dict[str, Any] = {}
        for name, value in changes.items():
            if name in ("exp_month", "exp_year", "last4"):
                if getattr(method, name) != value:
                    card[name] = getattr(method, name)
                    setattr(method, name, value)
            elif name == "metadata":
                changed = changed_keys(method.metadata, value)
                if changed:
                    previous["metadata"] = changed
                    method.metadata = dict(value)
            elif name == "billing_details":
                old = (method.extra or {}).get("billing_details") or _EMPTY_BILLING
                changed = _nested_changes(old, value)
                if changed:
                    previous["billing_details"] = changed
                    method.extra = {**(method.extra or {}), "billing_details": dict(value)}
            else:
                raise ValueError(f"payment method {method.id}: {name!r} cannot be updated")
        if card:
            previous["card"] = card
        if previous:
            kind = "automatically_updated" if automatic else "updated"
            self.events.emit(f"payment_method.{kind}", method, previous)

    def payment_methods_of(
        self, customer_id: str, kind: str | None = None
    ) -> list[PaymentMethodRecord]:
        """The customer's payment methods of type `kind` (every type when None), newest first
        (Stripe's order)."""
        methods = self._pms_by_customer.get(customer_id, ())
        if kind is not None:
            methods = [m for m in methods if m.type == kind]
        return sorted(methods, key=lambda m: -m.key)

    # --- subscriptions -------------------------------------------------------------------
    def add_subscription(
        self,
        customer_id: str,
        prices: Sequence[tuple[str, int]],
        metadata: Mapping[str, str] | None = None,
        *,
        status: str = "active",
        created: int | None = None,
        subscription_id: str | None = None,
        trial_end: int | None = None,
    ) -> SubscriptionRecord:
        """A new subscription, or (same `subscription_id`) a replacement of an existing one."""
        check_subscription_status(status)
        if not subscription_id:
            subscription_id = new_id("sub_", 24)
            while subscription_id in self.subscriptions:
                subscription_id = new_id("sub_", 24)
        old = self.subscriptions.get(subscription_id)
        if old is not None:
            self._subs_by_customer.get(old.customer, []).remove(old)
        quiet = self.events.suspended() if old is not None else contextlib.nullcontext()
        when = self.now() if created is None else created
        record = SubscriptionRecord(
            subscription_id,
            when,
            customer_id,
            list(prices),
            metadata=dict(metadata or {}),
            trial_end=trial_end,
        )
        with self.events.suspended():  # a new subscription starts in its status
            self.set_subscription_status(record, status)
        self.subscriptions[record.id] = record
        mine = self._subs_by_customer.setdefault(customer_id, [])
        mine.append(record)
        mine.sort(key=lambda s: s.created)  # oldest first; loads may come in any order
        with quiet:  # replacing a record (a load) is not a write
            self.events.emit("customer.subscription.created", record)
        return record

    def set_subscription_status(self, record: SubscriptionRecord, status: str) -> None:
        """A status change emits `customer.subscription.updated`, or `.deleted` when the
        subscription is canceled (Stripe's event for a subscription that ended)."""
        check_subscription_status(status)
        old_status, old_canceled_at = record.status, record.canceled_at
        if status == "canceled" and record.status != "canceled":
            record.canceled_at = self.now()
        record.status = status
        if status == old_status:
            return
        if status == "canceled":
            self.events.emit("customer.subscription.deleted", record)
            return
        previous: dict[str, Any] = {"status": old_status}
        if record.canceled_at != old_canceled_at:
            previous["canceled_at"] = old_canceled_at
        if (status in TERMINAL_SUBSCRIPTION_STATUSES) != (
            old_status in TERMINAL_SUBSCRIPTION_STATUSES
        ):
            previous["ended_at"] = (
                (old_canceled_at or record.created)
                if old_status in TERMINAL_SUBSCRIPTION_STATUSES
                else None
            )
        self.events.emit("customer.subscription.updated", record, previous)

    def subscriptions_of(self, customer_id: str) -> list[SubscriptionRecord]:
        """The customer's subscriptions, newest first."""
        return list(reversed(self._subs_by_customer.get(customer_id, ())))

    # --- bulk ----------------------------------------------------------------------------
    def bulk_load(
        self,
        customers: Sequence[Mapping[str, Any]],
        payment_methods: Sequence[Mapping[str, Any]],
        subscriptions: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Load many records at once: one sort at the end instead of an insert each.

        A subscription is `{"customer", "status"?, "id"?, "created"?, "items"?:
        [{"price", "quantity"?}], "metadata"?, "trial_end"?}`; one with an existing id
        replaces it (how a test moves a subscription to another status). A load emits no
        events: the records are the account as it already is."""
        with self.events.suspended():
            self._bulk_load(customers, payment_methods, subscriptions)

    def _bulk_load(
        self,
        customers: Sequence[Mapping[str, Any]],
        payment_methods: Sequence[Mapping[str, Any]],
        subscriptions: Sequence[Mapping[str, Any]],
    ) -> None:
        seq = self._seq
        shift = SEQ_BITS
        fresh: list[CustomerRecord] = []
        existing = self.customers
        for item in customers:
            seq += 1
            created = int(item["created"])
            record = CustomerRecord(
                item["id"],
                created,
                (created << shift) | seq,
                item.get("email"),
                item.get("name"),
                item.get("phone"),
                item.get("description"),
                dict(item.get("metadata") or {}),
                item.get("default_payment_method"),
                int(item.get("balance") or 0),
            )
            old = existing.get(record.id)
            if old is not None and not old.deleted:
                self._index_remove(old)
            existing[record.id] = record
            fresh.append(record)
        self._seq = seq
        self._index.extend(fresh)
        self._index.sort(key=_by_key)
        by_email = self._by_email
        for record in fresh:
            if record.email is not None:
                by_email.setdefault(record.email.lower(), []).append(record)
        self._metadata_indexes.clear()  # rebuilt lazily on the next metadata search
        for item in payment_methods:
            created = int(item["created"])
            self.add_payment_method(item, created=created)
        for item in subscriptions:  # all checked first: a refused load adds none of them
            check_subscription_status(str(item.get("status", "active")))
            if str(item["customer"]) not in self.customers:
                raise ValueError(
                    f"subscription for customer {item['customer']!r}: no such customer"
                )
        for item in subscriptions:
            self._load_subscription(item)

    def _load_subscription(self, item: Mapping[str, Any]) -> None:
        customer_id = str(item["customer"])
        items = item.get("items") or [{"price": "price_sandbox", "quantity": 1}]
        prices = [(str(i["price"]), int(i.get("quantity", 1))) for i in items]
        created = item.get("created")
        trial_end = item.get("trial_end")
        self.add_subscription(
            customer_id,
            prices,
            item.get("metadata"),
            status=str(item.get("status", "active")),
            created=None if created is None else int(created),
            subscription_id=item.get("id"),
            trial_end=None if trial_end is None else int(trial_end),
        )

    def reset(self) -> None:
        self.__init__(self.mode, self._clock, self.events.faults)  # type: ignore[misc]

    def idempotent_result(self, key: str) -> IdempotentResult | None:
        """The stored result for `key`, or None when there is none or it is 24 hours old."""
        seen = self.idempotency.get(key)
        if seen is not None and self._clock() - seen.stored_at >= IDEMPOTENCY_TTL_SECONDS:
            del self.idempotency[key]
            return None
        return seen

    def remember(self, key: str, result: IdempotentResult) -> None:
        results = self.idempotency
        results.pop(key, None)  # a re-used expired key goes to the end, with the newest
        results[key] = result
        expired_before = self._clock() - IDEMPOTENCY_TTL_SECONDS
        while results:
            oldest = next(iter(results.values()))
            if oldest.stored_at > expired_before and len(results) <= _IDEMPOTENCY_CAPACITY:
                break
            results.popitem(last=False)


def check_subscription_status(status: str) -> None:
    if status not in SUBSCRIPTION_STATUSES:
        raise ValueError(
            f"unknown subscription status {status!r}: use one of "
            f"{', '.join(sorted(SUBSCRIPTION_STATUSES))}"
        )


_EMPTY_BILLING: dict[str, Any] = {
    "address": {
        name: None for name in ("city", "country", "line1", "line2", "postal_code", "state")
    },
    "email": None,
    "name": None,
    "phone": None,
    "tax_id": None,
}


def _customer_previous(record: CustomerRecord, changes: Mapping[str, Any]) -> dict[str, Any]:
    """`previous_attributes` of a customer update, in Stripe's JSON shape: changed keys of
    `metadata` only, the default payment method under `invoice_settings`."""
    previous: dict[str, Any] = {}
    for name, value in changes.items():
        old = getattr(record, name)
        if name == "metadata":
            changed = changed_keys(old, value)
            if changed:
                previous["metadata"] = changed
        elif old == value:
            continue
        elif name == "default_payment_method":
            previous["invoice_settings"] = {"default_payment_method": old}
        else:
            previous[name] = old
    return previous


def _nested_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Stripe's `previous_attributes` for a changed nested object: the changed leaves with
    their old values (`None` where there was none), nested objects only as deep as they
    changed."""
    changed: dict[str, Any] = {}
    for key in old.keys() | new.keys():
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            changed[key] = _nested_changes(before, after)
        else:
            changed[key] = before
    return changed


def _remove_from(
    index: dict[str, list[CustomerRecord]], value: str, record: CustomerRecord
) -> None:
    bucket = index.get(value)
    if bucket is None:
        return
    for position, item in enumerate(bucket):
        if item is record:
            del bucket[position]
            break
    if not bucket:
        del index[value]


class SandboxStore:
    """Both modes' data behind one lock (the server's loop and test threads share it)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        # Every mode reads this one clock; tests move it with `clock.advance(...)`.
        self.clock = clock if isinstance(clock, SandboxClock) else SandboxClock(clock)
        # How the next events go wrong (late, backdated, dropped), whichever mode emits them.
        self.event_faults = EventFaults()
        self.modes: dict[str, ModeStore] = {
            mode: ModeStore(mode, self.clock, self.event_faults) for mode in MODES
        }

    def mode(self, mode: str) -> ModeStore:
        try:
            return self.modes[str(mode)]
        except KeyError:
            raise ValueError(f"unknown mode {mode!r}: use 'test' or 'live'") from None

    def bulk_load(
        self,
        mode: str,
        customers: Sequence[Mapping[str, Any]],
        payment_methods: Sequence[Mapping[str, Any]] = (),
        subscriptions: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Load records as the account already is, without events: a caller that wants
        the history Stripe would list for them adds it (history.py), holding `lock`."""
        with self.lock:
            self.mode(mode).bulk_load(customers, payment_methods, subscriptions)

    def reset(self) -> None:
        """Empty both modes (events included), clear the event faults and put the clock
        back on its base time."""
        with self.lock:
            self.clock.reset()
            self.event_faults.clear()
            for store in self.modes.values():
                store.reset()

    def add_subscription(
        self,
        mode: str,
        customer_id: str,
        status: str = "active",
        *,
        prices: Sequence[tuple[str, int]] = (("price_sandbox", 1),),
        metadata: Mapping[str, str] | None = None,
    ) -> SubscriptionRecord:
        """A subscription in any status, as Stripe's API could not make it directly
        (`past_due`, `unpaid`, `paused`, ...)."""
        with self.lock:
            data = self.mode(mode)
            if customer_id not in data.customers:
                raise ValueError(f"no customer {customer_id!r} in {mode} mode")
            with data.events.write():
                return data.add_subscription(customer_id, prices, metadata, status=status)

    def set_subscription_status(self, mode: str, subscription_id: str, status: str) -> None:
        with self.lock:
            data = self.mode(mode)
            record = data.subscriptions.get(subscription_id)
            if record is None:
                raise ValueError(f"no subscription {subscription_id!r} in {mode} mode")
            with data.events.write():
                data.set_subscription_status(record, status)

    def update_card(
        self,
        mode: str,
        method_id: str,
        *,
        exp_month: int,
        exp_year: int,
        last4: str | None = None,
    ) -> PaymentMethodRecord:
        """What a card network's updater does: the card's expiry (and maybe its last four
        digits) change without any API request, and `payment_method.automatically_updated`
        is emitted."""
        with self.lock:
            data = self.mode(mode)
            method = data.payment_methods.get(method_id)
            if method is None or method.type != "card":
                raise ValueError(f"no card payment method {method_id!r} in {mode} mode")
            if not 1 <= int(exp_month) <= 12:
                raise ValueError(f"exp_month must be 1 to 12, got {exp_month!r}")
            if not 2000 <= int(exp_year) <= 2100:
                raise ValueError(f"exp_year must be a four-digit year, got {exp_year!r}")
            changes: dict[str, Any] = {"exp_month": int(exp_month), "exp_year": int(exp_year)}
            if last4 is not None:
                if not (len(str(last4)) == 4 and str(last4).isdigit()):
                    raise ValueError(f"last4 must be four digits, got {last4!r}")
                changes["last4"] = str(last4)
            with data.events.write():
                data.update_payment_method(method, changes, automatic=True)
            return method

    def mark_deleted(self, mode: str, customer_ids: Iterable[str]) -> None:
        """Delete customers as the API would (they leave lists, retrieve says deleted)."""
        with self.lock:
            store = self.mode(mode)
            for customer_id in customer_ids:
                record = store.customers.get(customer_id)
                if record is not None and not record.deleted:
                    with store.events.write():
                        store.delete_customer(record)

    def customer(self, mode: str, customer_id: str) -> CustomerRecord | None:
        with self.lock:
            return self.mode(mode).customers.get(customer_id)

    def payment_method(self, mode: str, method_id: str) -> PaymentMethodRecord | None:
        with self.lock:
            return self.mode(mode).payment_methods.get(method_id)

    def count(self, mode: str) -> int:
        with self.lock:
            return len(self.mode(mode))

    def other_mode_holding(self, mode: str, object_id: str) -> str | None:
        """The other mode's name when it holds this id (for Stripe's wrong-mode hint)."""
        other = "live" if mode == "test" else "test"
        store = self.modes[other]
        if object_id in store.customers or object_id in store.payment_methods:
            return other
        return None
