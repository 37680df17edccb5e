"""Pure rules of an incremental run: which listing a run takes, and what Stripe's events do
to a mirrored customer.

A mirrored customer is a *row*: the fields the jobs compare (`customer_id`, `email`, `name`,
`created`, `livemode`, `default_payment_method`, `default_source`, `meta.<key>` for the
metadata keys the settings name). Events are applied in order of `created`, ties in the
order Stripe listed them (its emission order), each event once. Each event's object is the
row *after* it; its `previous_attributes` give the row *before* it. An event applies cleanly
when the row before it is what the mirror holds; when it is not (an event back-dated past
another of the same customer, one already reflected by the listing, one missed), the
customer is marked *unsure* and read back from Stripe: events are chained, so a customer
whose events all chain from the mirrored row ends where Stripe does, and one whose events
do not is re-read rather than guessed. An event created at or before the mirror's
watermark that the mirror has not applied came late (or back-dated) after later ones were
applied: its customer is unsure too, even when its previous attributes happen to chain
(A to B applied, then a late B to A... would otherwise end on the wrong value).

Payment methods are tracked the same way for card-expiry's default-card facts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CARD_FIELDS",
    "CUSTOMER_EVENT_TYPES",
    "DELETED",
    "EVENT_TYPES",
    "PAYMENT_METHOD_EVENT_TYPES",
    "SEEN_THROUGH",
    "AppliedEvents",
    "ListingChoice",
    "MirrorIdentity",
    "Row",
    "apply_events",
    "choose_listing",
    "customer_row",
    "events_in_order",
    "payment_method_facts",
    "row_before",
]

CUSTOMER_EVENT_TYPES = ("customer.created", "customer.updated", "customer.deleted")
PAYMENT_METHOD_EVENT_TYPES = (
    "payment_method.attached",
    "payment_method.detached",
    "payment_method.updated",
    "payment_method.automatically_updated",
)
EVENT_TYPES = CUSTOMER_EVENT_TYPES + PAYMENT_METHOD_EVENT_TYPES
CARD_FIELDS = ("brand", "last4", "exp_month", "exp_year", "fingerprint")
META_PREFIX = "meta."
DAY_SECONDS = 86_400
# Stripe keeps events 30 days: a mirror whose watermark is older may have lost some.
MAX_MIRROR_AGE_DAYS = 29

Row = dict[str, Any]


def _id_of(value: Any) -> str | None:
    if isinstance(value, Mapping):
        found = value.get("id")
        return str(found) if found else None
    return str(value) if value else None


def customer_row(
    obj: Mapping[str, Any], metadata_keys: Sequence[str], *, with_source: bool = False
) -> Row:
    """The mirrored fields of a customer object (an event's, a listing's or a retrieve's);
    `with_source`: the legacy default source too (card-expiry reads it, reconcile not)."""
    settings = obj.get("invoice_settings")
    default_pm = settings.get("default_payment_method") if isinstance(settings, Mapping) else None
    metadata = obj.get("metadata") or {}
    row: Row = {
        "customer_id": str(obj["id"]),
        "email": obj.get("email"),
        "name": obj.get("name"),
        "created": int(obj.get("created") or 0),
        "livemode": bool(obj.get("livemode", False)),
        "default_payment_method": _id_of(default_pm),
    }
    if with_source:
        row["default_source"] = _id_of(obj.get("default_source"))
    for key in metadata_keys:
        value = metadata.get(key)
        row[META_PREFIX + key] = value if value is None or isinstance(value, str) else str(value)
    return row


def row_before(
    obj: Mapping[str, Any],
    previous: Mapping[str, Any],
    metadata_keys: Sequence[str],
    *,
    with_source: bool = False,
) -> Row:
    """The row as it was before a `customer.updated`: the object with Stripe's
    `previous_attributes` put back (a hash such as metadata lists only its changed keys,
    None for a key that did not exist)."""
    row = customer_row(obj, metadata_keys, with_source=with_source)
    for name in ("email", "name"):
        if name in previous:
            row[name] = previous[name]
    settings = previous.get("invoice_settings")
    if isinstance(settings, Mapping) and "default_payment_method" in settings:
        row["default_payment_method"] = _id_of(settings["default_payment_method"])
    if with_source and "default_source" in previous:
        row["default_source"] = _id_of(previous["default_source"])
    metadata = previous.get("metadata")
    if isinstance(metadata, Mapping):
        for key in metadata_keys:
            if key in metadata:
                value = metadata[key]
                row[META_PREFIX + key] = value if value is None else str(value)
    return row


def payment_method_facts(obj: Mapping[str, Any]) -> Row:
    """What card-expiry reads of a payment method (trimmed as its listing trims it), and
    the customer it is attached to."""
    card = obj.get("card")
    return {
        "id": str(obj["id"]),
        "object": obj.get("object", "payment_method"),
        "type": obj.get("type"),
        "card": (
            {key: card.get(key) for key in CARD_FIELDS} if isinstance(card, Mapping) else card
        ),
        "customer": _id_of(obj.get("customer")),
    }


def _facts_before(obj: Mapping[str, Any], previous: Mapping[str, Any]) -> Row:
    facts = payment_method_facts(obj)
    if "customer" in previous:
        facts["customer"] = _id_of(previous["customer"])
    card_before = previous.get("card")
    if isinstance(card_before, Mapping) and isinstance(facts["card"], Mapping):
        facts["card"] = {
            **facts["card"],
            **{key: card_before[key] for key in CARD_FIELDS if key in card_before},
        }
    return facts


def events_in_order(
    listed: Iterable[Mapping[str, Any]], already_applied: Iterable[str] = ()
) -> list[Mapping[str, Any]]:
    """Events as listed (newest first, pages possibly overlapping) to the order they are
    applied in: oldest `created` first, ties in Stripe's own order (the reverse of the
    listing's), each id once, those applied by an earlier run left out."""
    skip = set(already_applied)
    seen: set[str] = set()
    ordered: list[tuple[int, int, Mapping[str, Any]]] = []
    for position, event in enumerate(listed):
        event_id = str(event["id"])
        if event_id in seen or event_id in skip:
            continue
        seen.add(event_id)
        ordered.append((int(event["created"]), -position, event))
    ordered.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in ordered]


DELETED: Row = {}  # a customer gone from Stripe (deleted): not in the mirror


@dataclass
class AppliedEvents:
    """What a batch of events did to the mirror.

    `rows`: the customers whose row changed, by id (`DELETED` for a deleted one);
    `unsure`: customers to read back from Stripe (their events did not chain);
    `payment_methods`: facts of the payment methods the events showed, by id;
    `unsure_payment_methods`: those whose events did not chain;
    `deleted`: customers the events deleted (never to come back)."""

    rows: dict[str, Row] = field(default_factory=dict)
    unsure: set[str] = field(default_factory=set)
    payment_methods: dict[str, Row] = field(default_factory=dict)
    unsure_payment_methods: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    applied: int = 0


SEEN_THROUGH = "seen_through"


def _seen_through(row: Row | None) -> int:
    value = (row or {}).get(SEEN_THROUGH)
    return int(value) if value else 0


def _same(held: Row | None, expected: Row | None) -> bool:
    """Whether the mirror holds `expected`, on the fields an event shows (a mirror row
    carries more: card-expiry's default facts)."""
    if not held or not expected:
        return not held and not expected
    return all(held.get(name) == value for name, value in expected.items())


def apply_events(
    events: Sequence[Mapping[str, Any]],
    mirrored: Mapping[str, Row],
    known_payment_methods: Mapping[str, Row],
    metadata_keys: Sequence[str],
    *,
    seen_through: int,
    tombstones: Iterable[str] = (),
    with_source: bool = False,
) -> AppliedEvents:
    """Apply `events` (in `events_in_order`'s order) to the mirrored rows they touch.

    `mirrored` holds the current row of every customer the events name that the mirror
    has (absent: not in the mirror); `known_payment_methods` the facts of the payment
    methods the mirror knows (the default cards), by id. `seen_through` is the mirror's
    watermark: an event created then or before that the mirror has not applied arrived
    late or back-dated, after events that followed it were applied (or the listing read
    its customer): its object is unsure, whatever its previous attributes say. A row read
    back from Stripe carries its own `seen_through` (when it was read). `tombstones` are
    customers known deleted: their events are ignored."""
    result = AppliedEvents()
    current: dict[str, Row | None] = {}
    deleted = set(tombstones)

    def row_of(customer_id: str) -> Row | None:
        if customer_id not in current:
            current[customer_id] = mirrored.get(customer_id)
        return current[customer_id]

    methods: dict[str, Row | None] = {}

    for event in events:
        kind = str(event["type"])
        data = event.get("data") or {}
        obj = data.get("object") or {}
        previous = data.get("previous_attributes") or {}
        created = int(event["created"])
        if kind in CUSTOMER_EVENT_TYPES:
            customer_id = str(obj["id"])
            if customer_id in deleted:
                # Stripe never brings a deleted customer back: a late event about it
                # (its creation listed after its deletion) changes nothing.
                continue
            before = row_of(customer_id)
            arrived_late = created <= max(seen_through, _seen_through(mirrored.get(customer_id)))
            if kind == "customer.created":
                expected: Row | None = None
            else:
                expected = (
                    row_before(obj, previous, metadata_keys, with_source=with_source)
                    if kind == "customer.updated"
                    else customer_row(obj, metadata_keys, with_source=with_source)
                )
            if kind == "customer.deleted":
                # Final whatever came before it: no read back needed.
                deleted.add(customer_id)
                result.deleted.add(customer_id)
                result.unsure.discard(customer_id)
                current[customer_id] = None
                result.rows[customer_id] = DELETED
                result.applied += 1
                continue
            if arrived_late or not _same(before, expected):
                result.unsure.add(customer_id)
            after = customer_row(obj, metadata_keys, with_source=with_source)
            current[customer_id] = after or None
            result.rows[customer_id] = after
            result.applied += 1
        elif kind in PAYMENT_METHOD_EVENT_TYPES:
            method_id = str(obj["id"])
            if method_id not in methods:
                methods[method_id] = known_payment_methods.get(method_id)
            known = methods[method_id]
            holder = (known or {}).get("customer")
            arrived_late = created <= max(
                seen_through, _seen_through(mirrored.get(str(holder))) if holder else 0
            )
            if kind == "payment_method.attached":
                expected = {**payment_method_facts(obj), "customer": None}
            else:
                expected = _facts_before(obj, previous)
            # A method first seen here (not a default card the mirror knows) has no row to
            # check against: its first event is taken as it is, later ones chain from it.
            if arrived_late or (known is not None and known != expected):
                result.unsure_payment_methods.add(method_id)
            facts = payment_method_facts(obj)
            methods[method_id] = facts
            result.payment_methods[method_id] = facts
            result.applied += 1
    return result


Listing = Literal["full", "incremental"]


@dataclass(frozen=True)
class MirrorIdentity:
    """What a mirror must match to stand for this run's customers."""

    job: str
    mode: str
    account: str  # a hash of the key: another account's customers are another world
    tool_version: str
    metadata_keys: tuple[str, ...]


@dataclass(frozen=True)
class ListingChoice:
    listing: Listing
    reason: str
    # Whether the run keeps a mirror (writes one after a full listing).
    keep_mirror: bool


def choose_listing(
    *,
    requested: bool | None,
    enabled: bool,
    all_cards: bool,
    wanted: MirrorIdentity,
    found: MirrorIdentity | None,
    now: float,
    watermark: float | None,
    full_listed_at: float | None,
    full_every_days: float,
) -> ListingChoice:
    """Full or incremental, and why (said in summary.json).

    Incremental only when asked (`requested`, or `enabled` when nothing is requested) and
    the mirror stands for this run: same job, mode, account, tool version and metadata keys,
    a watermark younger than 29 days (events are kept 30) and a full listing younger than
    `full_every_days` (the safety net against events Stripe never generated)."""
    wants = enabled if requested is None else requested
    keep = wants or (requested is False and enabled)
    if not wants:
        reason = "--full" if requested is False else "[incremental] enabled is false"
        return ListingChoice("full", reason, keep)
    if all_cards:
        return ListingChoice("full", "--all-cards reads every customer's cards", False)
    if found is None or watermark is None or full_listed_at is None:
        return ListingChoice("full", "no customer mirror yet", True)
    for name, label in (
        ("job", "another job"),
        ("mode", "the other mode"),
        ("account", "another account (key)"),
        ("tool_version", "another version of the tool"),
        ("metadata_keys", "other metadata keys"),
    ):
        if getattr(found, name) != getattr(wanted, name):
            return ListingChoice("full", f"the customer mirror is of {label}", True)
    if now - watermark > MAX_MIRROR_AGE_DAYS * DAY_SECONDS:
        return ListingChoice(
            "full", f"the customer mirror is older than {MAX_MIRROR_AGE_DAYS} days", True
        )
    if now - full_listed_at >= full_every_days * DAY_SECONDS:
        return ListingChoice(
            "full", f"the last full listing is {full_every_days:g} days old or more", True
        )
    return ListingChoice("incremental", "events since the last run", True)
