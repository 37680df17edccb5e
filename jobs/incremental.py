"""Incremental runs of the read-only jobs: the customer mirror brought up to date from
Stripe's events instead of a listing of every customer.

A job asks `plan_listing` which listing this run takes (reconcile.rules.events.choose_listing).
After a full listing it calls `keep_full_listing`: the listed customers become the mirror,
its watermark the listing's bound, and the events Stripe already listed from the overlap
before it are marked as reflected. An incremental run (`update_mirror`) reads the events
from `watermark - overlap` (by concurrent cursors: reconcile.listing.event_windows), applies
each new one once in order, reads back from Stripe the customers whose events did not chain
(reconcile.rules.events), saves the mirror and hands the job the same frame a full listing
would have. card-expiry reads it as columns (`mirror_customers`, `mirror_default_cards`):
no customer record is rebuilt. The write jobs never come here: they list every customer and
compare-and-set before each write.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from jobs.base import JobContext
from jobs.per_customer import scan_customers, scan_workers
from reconcile.errors import ConfigError, StripeNotFoundError
from reconcile.listing.event_windows import list_events_concurrently
from reconcile.listing.mirror import (
    MirrorMeta,
    account_of,
    load_known_missing,
    load_mirror,
    mirror_path,
    read_meta,
    save_known_missing,
    save_mirror,
    tool_version,
)
from reconcile.logs import get_logger
from reconcile.rules.cards import CARD_COLUMNS, card_from_object, cards_frame
from reconcile.rules.events import (
    DELETED,
    EVENT_TYPES,
    PAYMENT_METHOD_EVENT_TYPES,
    SEEN_THROUGH,
    AppliedEvents,
    ListingChoice,
    MirrorIdentity,
    Row,
    apply_events,
    choose_listing,
    customer_row,
    events_in_order,
)
from reconcile.rules.snapshots import CUSTOMER_COLUMNS, STRING_DTYPE, meta_column

__all__ = [
    "DEFAULT_FACTS",
    "INCREMENTAL_OPTION",
    "ListingPlan",
    "default_facts_json",
    "keep_full_listing",
    "known_missing",
    "mirror_columns",
    "mirror_customers",
    "mirror_default_cards",
    "plan_listing",
    "reflected_events",
    "remember_missing",
    "update_mirror",
]

log = get_logger(__name__)

INCREMENTAL_OPTION = "incremental"
# card-expiry's column: the default payment method (or legacy source) as its listing
# trims it, as JSON; absent for reconcile.
DEFAULT_FACTS = "default_facts"
SOURCE = "default_source"

# (id, object or None) of what invoices charge, from an expanded customer (card-expiry's).
# A customer read back is taken to show every event created up to this long after the
# run's clock said it was read (clock skew): a later-listed event older than that is late.
READ_MARGIN = 300
TOMBSTONE_DAYS = 31
FULL_LISTING_READS = ("GET /v1/customers", "GET /v1/events")

DefaultOf = Callable[[Mapping[str, Any]], tuple[str | None, Any]]


@dataclass
class ListingPlan:
    choice: ListingChoice
    identity: MirrorIdentity
    path: Path
    meta: MirrorMeta | None
    # Facts for summary.json.
    facts: dict[str, Any] = field(default_factory=dict)
    reflected: tuple[str, ...] = ()


def plan_listing(
    ctx: JobContext, job: str, metadata_keys: Sequence[str], *, all_cards: bool = False
) -> ListingPlan:
    requested = ctx.options.get(INCREMENTAL_OPTION)
    if requested is not None and not isinstance(requested, bool):
        raise ConfigError(f"option incremental: expected true or false, got {requested!r}")
    if requested is True and all_cards:
        raise ConfigError(
            "--incremental reads default cards from events; --all-cards lists every card of "
            "every customer: use one of them"
        )
    settings = ctx.settings.incremental
    identity = MirrorIdentity(
        job=job,
        mode=ctx.gateway.mode.value,
        account=account_of(ctx.settings.require_key()),
        tool_version=tool_version(),
        metadata_keys=tuple(metadata_keys),
    )
    path = mirror_path(ctx.settings, job, identity.mode)
    meta = read_meta(path)
    choice = choose_listing(
        requested=requested,
        enabled=settings.enabled,
        all_cards=all_cards,
        wanted=identity,
        found=meta.identity if meta else None,
        now=ctx.started_at.timestamp(),
        watermark=meta.watermark if meta else None,
        full_listed_at=meta.full_listed_at if meta else None,
        full_every_days=settings.full_every_days,
    )
    log.info("listing chosen", listing=choice.listing, reason=choice.reason)
    plan = ListingPlan(choice, identity, path, meta)
    plan.facts = {"listing": choice.listing, "listing_reason": choice.reason}
    return plan


def reflected_events(ctx: JobContext, bound: int) -> tuple[str, ...]:
    """Before a full listing: the events already listed from the overlap before its bound.
    Their writes happened before the listing read anything, so its pages show them; the
    next incremental run leaves them out instead of reading those customers back."""
    since = bound - ctx.settings.incremental.overlap_seconds
    listed = ctx.gateway.list_events(created_gte=since, types=EVENT_TYPES)
    return tuple(str(event["id"]) for event in listed if _listed_by(event, bound))


def _listed_by(event: Mapping[str, Any], bound: int) -> bool:
    # A listing bounded at `bound` shows customers created before it, as they are when
    # their page is read: events from before it about those customers are in its pages.
    if int(event["created"]) >= bound:
        return False
    obj = (event.get("data") or {}).get("object") or {}
    return not str(event["type"]).startswith("customer.") or int(obj.get("created") or 0) < bound


def _requests(ctx: JobContext) -> int:
    return sum(ctx.gateway.stats.by_endpoint.values())


def keep_full_listing(
    ctx: JobContext, plan: ListingPlan, frame: pd.DataFrame, *, bound: int
) -> None:
    """The full listing's customers become the mirror (when the run keeps one). Its reads
    go into summary.json: the customer pages and the events of the overlap."""
    by_endpoint = ctx.gateway.stats.by_endpoint
    plan.facts["listing_requests"] = sum(by_endpoint.get(e, 0) for e in FULL_LISTING_READS)
    if not plan.choice.keep_mirror:
        return
    now = ctx.started_at.timestamp()
    frame = frame.assign(**{SEEN_THROUGH: 0})
    meta = MirrorMeta(
        identity=plan.identity,
        # Events created before the bound that were not listed as it started (late or
        # back-dated ones) are unsure next run: the listing may or may not show them.
        watermark=bound - 1,
        full_listed_at=now,
        updated_at=now,
        applied_event_ids=plan.reflected,
        customers=len(frame),
    )
    with ctx.phase("mirror_save"):
        save_mirror(plan.path, frame, meta)
    plan.facts["mirror_customers"] = len(frame)


def _rows_of(frame: pd.DataFrame, ids: Iterable[str]) -> dict[str, Row]:
    wanted = frame[frame["customer_id"].isin(list(set(ids)))]
    rows: dict[str, Row] = {}
    for record in wanted.to_dict("records"):
        row = {str(k): (None if v is None or v is pd.NA else v) for k, v in record.items()}
        row["created"] = int(row["created"] or 0)
        row["livemode"] = bool(row["livemode"])
        rows[str(row["customer_id"])] = row
    return rows


def _mirror_row(row: Row, columns: Sequence[str]) -> Row:
    found = {name: row.get(name) for name in columns}
    found[SEEN_THROUGH] = found.get(SEEN_THROUGH) or 0
    return found


def update_mirror(
    ctx: JobContext,
    plan: ListingPlan,
    *,
    default_of: DefaultOf | None = None,
    expand: Sequence[str] = (),
) -> pd.DataFrame:
    """The mirror brought up to date from the events since its watermark; saved, and
    returned as the frame a full listing gives (`DEFAULT_FACTS` too with `default_of`:
    card-expiry's default cards)."""
    meta = plan.meta
    assert meta is not None  # choose_listing gives "incremental" only with a mirror
    keys = plan.identity.metadata_keys
    cards = default_of is not None
    overlap = ctx.settings.incremental.overlap_seconds
    requests_before = _requests(ctx)
    entered = time.monotonic()
    with ctx.phase("mirror_load"):
        frame = load_mirror(plan.path)
    columns = list(frame.columns)
    with ctx.phase("events"):
        listed = list_events_concurrently(
            ctx.gateway,
            since=meta.watermark - overlap,
            types=EVENT_TYPES,
            workers=scan_workers(ctx.gateway.limiter),
        )
    ordered = events_in_order(listed, meta.applied_event_ids)
    customer_ids = {
        str(e["data"]["object"]["id"]) for e in ordered if str(e["type"]).startswith("customer.")
    }
    method_ids = {
        str(e["data"]["object"]["id"]) for e in ordered if e["type"] in PAYMENT_METHOD_EVENT_TYPES
    }
    holders = frame[frame["default_payment_method"].isin(list(method_ids))] if cards else frame[:0]
    mirrored = _rows_of(frame, customer_ids | set(holders["customer_id"].astype(str)))
    known_methods: dict[str, Row] = {}
    for customer_id, held in mirrored.items():
        default = _facts_of(held)
        if default is not None and default.get("object") == "payment_method":
            known_methods[str(default["id"])] = {**default, "customer": customer_id}
    tombstones = dict(meta.tombstones)
    applied = apply_events(
        ordered,
        mirrored,
        known_methods,
        keys,
        seen_through=meta.watermark,
        tombstones=tombstones,
        with_source=cards,
    )
    changed: dict[str, Row] = dict(applied.rows)
    reread = set(applied.unsure)
    if cards:
        for customer_id in set(changed) | set(holders["customer_id"].astype(str)):
            after = changed.get(customer_id, mirrored.get(customer_id))
            if not after or customer_id in reread:
                continue
            facts, sure = _default_facts(after, mirrored.get(customer_id), applied)
            if not sure:
                reread.add(customer_id)
                continue
            changed[customer_id] = {**after, DEFAULT_FACTS: facts}
    if reread:
        with ctx.phase("customers_reread"):
            read = _read_back(ctx, sorted(reread), keys, default_of, expand)
        # Events created up to about now are in what was read: one listed later is late.
        read_at = int(ctx.started_at.timestamp() + time.monotonic() - entered) + READ_MARGIN
        for customer_id, row in read:
            changed[customer_id] = {**row, SEEN_THROUGH: read_at} if row else row
    # The mirror's rows: those left as they were, then the changed ones that still exist.
    kept = frame[~frame["customer_id"].isin(list(changed))]
    fresh = [_mirror_row(row, columns) for row in changed.values() if row]
    if fresh:
        added = pd.DataFrame(fresh, columns=columns)
        added = _like(added, frame)
        frame = pd.concat([kept, added], ignore_index=True)
    else:
        frame = kept
    frame = newest_first(frame)
    newest = max((int(e["created"]) for e in listed), default=meta.watermark)
    watermark = max(meta.watermark, newest)
    still_overlapping = {str(e["id"]) for e in listed if int(e["created"]) >= watermark - overlap}
    now = ctx.started_at.timestamp()
    for customer_id, row in changed.items():
        if not row:
            tombstones[customer_id] = now
    kept_since = now - TOMBSTONE_DAYS * 86_400
    new_meta = MirrorMeta(
        identity=plan.identity,
        watermark=watermark,
        full_listed_at=meta.full_listed_at,
        updated_at=now,
        applied_event_ids=tuple(sorted(still_overlapping)),
        customers=len(frame),
        tombstones=tuple(sorted((i, t) for i, t in tombstones.items() if t >= kept_since)),
    )
    with ctx.phase("mirror_save"):
        save_mirror(plan.path, frame, new_meta)
    plan.facts.update(
        {
            "events_read": len(listed),
            "events_applied": applied.applied,
            "customers_changed": len(changed),
            "customers_read_back": len(reread),
            "listing_requests": _requests(ctx) - requests_before,
            "mirror_customers": len(frame),
        }
    )
    log.info(
        "mirror updated from events",
        events_read=len(listed),
        events_applied=applied.applied,
        customers_read_back=len(reread),
    )
    return frame.drop(columns=[SEEN_THROUGH])


def newest_first(frame: pd.DataFrame) -> pd.DataFrame:
    """The mirror in a listing's order: newest first, then by id."""
    try:
        # Sorted by Arrow: pandas factorizes every id of a two-key sort first, seconds
        # over a million customers.
        keys = pa.table(
            {"created": pa.array(frame["created"]), "id": _arrow_text(frame["customer_id"])}
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return frame.sort_values(
            ["created", "customer_id"], ascending=[False, True], kind="stable"
        ).reset_index(drop=True)
    order = pc.sort_indices(
        keys, sort_keys=[("created", "descending", "at_end"), ("id", "ascending", "at_end")]
    )
    return frame.take(order.to_numpy()).reset_index(drop=True)


def _like(added: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    for name in added.columns:
        dtype = frame[name].dtype
        if dtype.kind in "iub":
            added[name] = added[name].astype(dtype)
        else:
            added[name] = pd.array(added[name].tolist(), dtype=cast(Any, dtype))
    return added


def _facts_of(row: Row | None) -> dict[str, Any] | None:
    raw = (row or {}).get(DEFAULT_FACTS)
    if not raw:
        return None
    facts: dict[str, Any] = json.loads(raw)
    return facts


def _default_facts(row: Row, before: Row | None, applied: AppliedEvents) -> tuple[str | None, bool]:
    """card-expiry's default facts of a customer after the events (JSON), and whether they
    are sure; not sure: read the customer back."""
    method = row.get("default_payment_method")
    old_facts = _facts_of(before)
    if method:
        if method in applied.payment_methods:
            facts = applied.payment_methods[method]
            attached_elsewhere = facts.get("customer") != row["customer_id"]
            if method in applied.unsure_payment_methods or attached_elsewhere:
                return None, False
            trimmed = {key: facts[key] for key in ("id", "object", "type", "card")}
            return json.dumps(trimmed, sort_keys=True), True
        if (
            before is not None
            and before.get("default_payment_method") == method
            and old_facts is not None
            and old_facts.get("id") == method
        ):
            return before.get(DEFAULT_FACTS), True
        return None, False
    source = row.get(SOURCE)
    if source:
        if before is not None and before.get(SOURCE) == source and old_facts is not None:
            return before.get(DEFAULT_FACTS), True
        return None, False
    return None, True


def default_facts_json(default_of: DefaultOf, record: Mapping[str, Any]) -> str | None:
    _, obj = default_of(record)
    return None if obj is None else json.dumps(obj, sort_keys=True)


def _read_back(
    ctx: JobContext,
    customer_ids: list[str],
    keys: Sequence[str],
    default_of: DefaultOf | None,
    expand: Sequence[str],
) -> list[tuple[str, Row]]:
    """Customers whose events did not chain, as Stripe holds them now (DELETED if gone)."""

    def read(customer_id: str) -> Row:
        try:
            found = ctx.gateway.retrieve_customer(customer_id, expand=expand)
        except StripeNotFoundError:
            return DELETED
        if found.get("deleted"):
            return DELETED
        row = customer_row(found, keys, with_source=default_of is not None)
        if default_of is not None:
            row[DEFAULT_FACTS] = default_facts_json(default_of, found)
        return row

    rows = scan_customers(
        customer_ids,
        read,
        workers=scan_workers(ctx.gateway.limiter),
        description="reading back customers",
    )
    return list(zip(customer_ids, rows, strict=True))


def mirror_columns(metadata_keys: Sequence[str], *, cards: bool) -> list[str]:
    columns = [*CUSTOMER_COLUMNS, *(meta_column(key) for key in metadata_keys)]
    return [*columns, SOURCE, DEFAULT_FACTS] if cards else columns


def known_missing(plan: ListingPlan) -> dict[str, str]:
    """Causes earlier runs found for linked customer ids missing from the listing, and the
    customers the events deleted (the mirror's tombstones)."""
    known = load_known_missing(plan.path, plan.identity.account, plan.identity.mode)
    meta = read_meta(plan.path)
    for customer_id, _ in meta.tombstones if meta is not None else ():
        known.setdefault(customer_id, "deleted")
    return known


def remember_missing(plan: ListingPlan, causes: Mapping[str, str]) -> None:
    """Keep this run's causes beside the mirror (when the run keeps one)."""
    if plan.choice.keep_mirror:
        save_known_missing(plan.path, plan.identity.account, plan.identity.mode, dict(causes))


def mirror_customers(frame: pd.DataFrame) -> pd.DataFrame:
    """The mirror's customers as the snapshot (`customers_frame`) gives them: read as
    columns, no customer record rebuilt."""
    return frame.drop(columns=[c for c in (SOURCE, DEFAULT_FACTS) if c in frame.columns])


_CARD_TEXT = ("brand", "last4", "fingerprint")
_CARD_FIELDS: list[tuple[str, pa.DataType]] = [
    ("brand", pa.string()),
    ("last4", pa.string()),
    ("exp_month", pa.int64()),
    ("exp_year", pa.int64()),
    ("fingerprint", pa.string()),
]
# The default facts as card-expiry's listing trims them: a payment method with its card
# inside, or a legacy card source with the card's fields at the top.
_FACTS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("object", pa.string()),
        ("type", pa.string()),
        ("card", pa.struct(_CARD_FIELDS)),
        *_CARD_FIELDS,
    ]
)


def mirror_default_cards(frame: pd.DataFrame) -> pd.DataFrame:
    """The default card of each mirrored customer, as `cards_frame(default_cards(...))`
    gives them for the same customers: their `DEFAULT_FACTS` parsed as one batch by
    Arrow instead of a JSON object per customer."""
    held = frame[frame[DEFAULT_FACTS].notna().to_numpy()]
    parsed = _parsed_facts(held[DEFAULT_FACTS])
    if parsed is None:
        return _cards_one_by_one(held)

    def values(column: pd.Series) -> Any:
        return np.asarray(column.astype(object).where(column.notna(), None), dtype=object)

    method, source = values(held["default_payment_method"]), values(held[SOURCE])
    fact_id = values(parsed["id"])
    # What invoices charge: the default payment method, else the default source; facts
    # of another object (stale) give no card, as in the records a listing gives.
    is_default = np.where(
        pd.notna(method), fact_id == method, pd.notna(source) & (fact_id == source)
    )
    kind = values(parsed["object"])
    method_card = (kind == "payment_method") & (values(parsed["type"]) == "card")
    method_card &= parsed["card_present"].to_numpy(dtype=bool)
    keep = is_default.astype(bool) & (method_card | (kind == "card"))
    out = pd.DataFrame(
        {
            "customer_id": values(held["customer_id"]),
            "payment_method_id": fact_id,
            **{
                name: np.where(method_card, values(parsed[f"card.{name}"]), values(parsed[name]))
                for name, _ in _CARD_FIELDS
            },
            "is_default": True,
        }
    )[keep]
    return _as_cards_frame(out)


def _parsed_facts(texts: pd.Series) -> pd.DataFrame | None:
    """The facts' fields as columns (`card.<field>` for the card inside a payment method,
    `card_present`), or None when some do not parse as card-expiry writes them."""
    if texts.empty:
        names = [*_FACTS_SCHEMA.names, *(f"card.{n}" for n, _ in _CARD_FIELDS), "card_present"]
        return pd.DataFrame({name: pd.Series([], dtype=object) for name in names})
    # json.dumps escapes line breaks inside strings: one object per line.
    body = "\n".join(texts.tolist()).encode()
    try:
        table = pa_json.read_json(
            io.BytesIO(body),
            parse_options=pa_json.ParseOptions(
                explicit_schema=_FACTS_SCHEMA, unexpected_field_behavior="ignore"
            ),
        )
    except pa.ArrowInvalid:
        return None  # a value of another type somewhere: read them one by one
    if table.num_rows != len(texts):
        return None
    present = pc.is_valid(table.column("card"))
    flat = table.flatten()
    frame = pd.DataFrame(
        {name: flat.column(name).to_numpy(zero_copy_only=False) for name in flat.column_names}
    )
    frame["card_present"] = present.to_numpy(zero_copy_only=False)
    frame.index = texts.index
    return frame


def _cards_one_by_one(held: pd.DataFrame) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for customer_id, method, source, raw in zip(
        held["customer_id"],
        held["default_payment_method"],
        held[SOURCE],
        held[DEFAULT_FACTS],
        strict=True,
    ):
        found = json.loads(raw)
        wanted = method if pd.notna(method) else (source if pd.notna(source) else None)
        if wanted is None or not isinstance(found, dict) or found.get("id") != wanted:
            continue
        row = card_from_object(found, str(customer_id), is_default=True)
        if row is not None:
            rows.append(row)
    return cards_frame(rows)


def _as_cards_frame(found: pd.DataFrame) -> pd.DataFrame:
    # The dtypes and order of reconcile.rules.cards.cards_frame.
    frame = found[list(CARD_COLUMNS)].reset_index(drop=True)
    text = ("customer_id", "payment_method_id", *_CARD_TEXT)
    try:
        # As Arrow strings, sorted by Arrow: pandas' two-key sort factorizes every id first,
        # seconds over a million cards where Arrow's sort takes a fraction.
        arrays = {column: _arrow_text(frame[column]) for column in text}
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return _as_cards_frame_slowly(frame)
    order = pc.sort_indices(
        pa.table({"c": arrays["customer_id"], "p": arrays["payment_method_id"]}),
        sort_keys=[("c", "ascending", "at_end"), ("p", "ascending", "at_end")],
    )
    positions = order.to_numpy()
    from_arrow = cast(Any, STRING_DTYPE).__from_arrow__  # pandas' ExtensionDtype protocol
    columns: dict[str, Any] = {column: from_arrow(arrays[column].take(order)) for column in text}
    for column in ("exp_month", "exp_year"):
        numbers = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
        columns[column] = numbers.array.take(positions)
    columns["is_default"] = frame["is_default"].fillna(False).astype(bool).to_numpy()[positions]
    return pd.DataFrame({column: columns[column] for column in CARD_COLUMNS})


def _arrow_text(values: pd.Series) -> pa.Array | pa.ChunkedArray:
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        return pa.array(values)  # already Arrow: no copy
    return pa.array(values.to_numpy(dtype=object), pa.string(), from_pandas=True)


def _as_cards_frame_slowly(frame: pd.DataFrame) -> pd.DataFrame:
    # Values that are not all text (never in facts card-expiry wrote): as cards_frame does.
    for column in ("customer_id", "payment_method_id", *_CARD_TEXT):
        values = frame[column].astype(object)
        frame[column] = values.where(values.notna(), None).astype(STRING_DTYPE)
    for column in ("exp_month", "exp_year"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    frame["is_default"] = frame["is_default"].fillna(False).astype(bool)
    return frame.sort_values(["customer_id", "payment_method_id"], ignore_index=True)
