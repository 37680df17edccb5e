"""In-memory Stripe state, one `ModeStore` per key mode, with a sorted index for paging.

Customers live in a list sorted by `key` (created, then insertion order), so a list page is
two bisections and a slice at any depth: O(log N + page size). Records are compact slotted
objects; the full Stripe JSON is built only when a record is served (see objects.py).
"""

from __future__ import annotations

import bisect
import secrets
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconcile.sandbox.clock import SandboxClock

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
_SEQ_BITS = 32
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


def sort_key(created: int, seq: int) -> int:
    """One int orders by `created`, then by insertion: cheap to compare and to bisect."""
    return (created << _SEQ_BITS) | seq


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

    def __init__(self, mode: str, clock: Callable[[], float]) -> None:
        self.mode = mode
        self._clock = clock
        self._seq = 0
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
        return record

    def update_customer(self, record: CustomerRecord, changes: Mapping[str, Any]) -> None:
        """Apply already-validated changes; the email and metadata indexes follow them (the
        sorted index does not move: `created` never changes)."""
        self._secondary_remove(record)
        for name, value in changes.items():
            setattr(record, name, value)
        self._secondary_insert(record)

    def delete_customer(self, record: CustomerRecord) -> None:
        self._index_remove(record)
        record.deleted = True
        for method in self._pms_by_customer.pop(record.id, []):
            method.customer = None
        # Stripe cancels a deleted customer's subscriptions at once, whatever their status.
        for subscription in self._subs_by_customer.get(record.id, ()):
            if subscription.status not in TERMINAL_SUBSCRIPTION_STATUSES:
                self.set_subscription_status(subscription, "canceled")

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
        low, high = _key_bounds(created)
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

    def detach(self, method: PaymentMethodRecord) -> None:
        if method.customer is None:
            return
        owner = self.customers.get(method.customer)
        methods = self._pms_by_customer.get(method.customer, [])
        if method in methods:
            methods.remove(method)
        if owner is not None and owner.default_payment_method == method.id:
            owner.default_payment_method = None
        method.customer = None

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
        when = self.now() if created is None else created
        record = SubscriptionRecord(
            subscription_id,
            when,
            customer_id,
            list(prices),
            metadata=dict(metadata or {}),
            trial_end=trial_end,
        )
        self.set_subscription_status(record, status)
        self.subscriptions[record.id] = record
        mine = self._subs_by_customer.setdefault(customer_id, [])
        mine.append(record)
        mine.sort(key=lambda s: s.created)  # oldest first; loads may come in any order
        return record

    def set_subscription_status(self, record: SubscriptionRecord, status: str) -> None:
        check_subscription_status(status)
        if status == "canceled" and record.status != "canceled":
            record.canceled_at = self.now()
        record.status = status

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
        replaces it (how a test moves a subscription to another status)."""
        seq = self._seq
        shift = _SEQ_BITS
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
        self.__init__(self.mode, self._clock)  # type: ignore[misc]

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


def _key_bounds(created: int | Mapping[str, int] | None) -> tuple[int, int]:
    """Half-open [low, high) bounds on `key` for a `created` filter."""
    low, high = 0, 1 << 96
    if created is None:
        return low, high
    if isinstance(created, int):
        return sort_key(created, 0), sort_key(created + 1, 0)
    if "gte" in created:
        low = max(low, sort_key(created["gte"], 0))
    if "gt" in created:
        low = max(low, sort_key(created["gt"] + 1, 0))
    if "lte" in created:
        high = min(high, sort_key(created["lte"] + 1, 0))
    if "lt" in created:
        high = min(high, sort_key(created["lt"], 0))
    return low, high


class SandboxStore:
    """Both modes' data behind one lock (the server's loop and test threads share it)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        # Every mode reads this one clock; tests move it with `clock.advance(...)`.
        self.clock = clock if isinstance(clock, SandboxClock) else SandboxClock(clock)
        self.modes: dict[str, ModeStore] = {mode: ModeStore(mode, self.clock) for mode in MODES}

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
        with self.lock:
            self.mode(mode).bulk_load(customers, payment_methods, subscriptions)

    def reset(self) -> None:
        """Empty both modes and put the clock back on its base time."""
        with self.lock:
            self.clock.reset()
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
            return data.add_subscription(customer_id, prices, metadata, status=status)

    def set_subscription_status(self, mode: str, subscription_id: str, status: str) -> None:
        with self.lock:
            data = self.mode(mode)
            record = data.subscriptions.get(subscription_id)
            if record is None:
                raise ValueError(f"no subscription {subscription_id!r} in {mode} mode")
            data.set_subscription_status(record, status)

    def mark_deleted(self, mode: str, customer_ids: Iterable[str]) -> None:
        """Delete customers as the API would (they leave lists, retrieve says deleted)."""
        with self.lock:
            store = self.mode(mode)
            for customer_id in customer_ids:
                record = store.customers.get(customer_id)
                if record is not None and not record.deleted:
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

    def all_ids(self, mode: str) -> Iterable[str]:
        with self.lock:
            return [record.id for record in self.mode(mode).newest_first()]
