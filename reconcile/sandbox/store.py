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

__all__ = [
    "MODES",
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


@dataclass(slots=True, eq=False)
class SubscriptionRecord:
    """Just enough of a subscription for the maintenance jobs: whose, which prices, status."""

    id: str
    created: int
    customer: str
    prices: list[tuple[str, int]]  # (price id, quantity)
    status: str = "active"
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IdempotentResult:
    fingerprint: str
    status: int
    body: bytes


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
        # Stripe cancels a deleted customer's subscriptions.
        for subscription in self._subs_by_customer.get(record.id, ()):
            subscription.status = "canceled"

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
        when = self.now() if created is None else created
        method_id = str(fields.get("id") or "")
        while not method_id or method_id in self.payment_methods:
            method_id = new_id("pm_", 24)
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

    def payment_methods_of(self, customer_id: str) -> list[PaymentMethodRecord]:
        """The customer's payment methods, newest first (Stripe's order)."""
        return sorted(self._pms_by_customer.get(customer_id, ()), key=lambda m: -m.key)

    # --- subscriptions -------------------------------------------------------------------
    def add_subscription(
        self,
        customer_id: str,
        prices: Sequence[tuple[str, int]],
        metadata: Mapping[str, str] | None = None,
    ) -> SubscriptionRecord:
        subscription_id = new_id("sub_", 24)
        while subscription_id in self.subscriptions:
            subscription_id = new_id("sub_", 24)
        record = SubscriptionRecord(
            subscription_id, self.now(), customer_id, list(prices), metadata=dict(metadata or {})
        )
        self.subscriptions[record.id] = record
        self._subs_by_customer.setdefault(customer_id, []).append(record)
        return record

    def subscriptions_of(self, customer_id: str) -> list[SubscriptionRecord]:
        """The customer's subscriptions, newest first."""
        return list(reversed(self._subs_by_customer.get(customer_id, ())))

    # --- bulk ----------------------------------------------------------------------------
    def bulk_load(
        self,
        customers: Sequence[Mapping[str, Any]],
        payment_methods: Sequence[Mapping[str, Any]],
    ) -> None:
        """Load many records at once: one sort at the end instead of an insert each."""
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

    def reset(self) -> None:
        self.__init__(self.mode, self._clock)  # type: ignore[misc]

    def remember(self, key: str, result: IdempotentResult) -> None:
        self.idempotency[key] = result
        if len(self.idempotency) > _IDEMPOTENCY_CAPACITY:
            self.idempotency.popitem(last=False)


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
        self._clock = clock
        self.modes: dict[str, ModeStore] = {mode: ModeStore(mode, clock) for mode in MODES}

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
    ) -> None:
        with self.lock:
            self.mode(mode).bulk_load(customers, payment_methods)

    def reset(self) -> None:
        with self.lock:
            for store in self.modes.values():
                store.reset()

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
