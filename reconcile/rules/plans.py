"""Planners: findings and snapshots in, a plan out; no I/O, no clock (today is a parameter).

A plan has one row per action (`PLAN_COLUMNS`): `action`, `customer_id`, `user_id`,
`params` and `before` (JSON objects), `reason` (one sentence) and `idempotency_key`
(derived from the data and the plan's intent, see `reconcile.rules.idempotency`: every planner
takes `intent`, the id of the listing it plans from). Rows whose action is `skip` are
reported, never carried out: they say why a change the job would make is not safe or
not possible (Stripe's metadata limits, several matches, only expired cards, ...).

Every planner is idempotent over the world: once its plan has been carried out,
planning again from fresh snapshots yields no action (only skips).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

import pandas as pd

from reconcile.rules.findings import STRING_DTYPE, FindingKind
from reconcile.rules.idempotency import canonical_json, idempotency_key
from reconcile.rules.metadata import metadata_violations

__all__ = [
    "ACTION_CLEAR_LINK",
    "ACTION_CREATE_AND_LINK",
    "ACTION_DELETE_CUSTOMER",
    "ACTION_LINK_USER",
    "ACTION_SET_DEFAULT_PM",
    "ACTION_SKIP",
    "ACTION_TAG_DUPLICATE",
    "ACTION_UPDATE_CUSTOMER",
    "PLAN_COLUMNS",
    "DedupeFacts",
    "SyncOptions",
    "SyncReplan",
    "card_is_expired",
    "empty_plan",
    "plan_dedupe",
    "plan_default_payment_method",
    "plan_gdpr_delete",
    "plan_link_users",
    "plan_sync_metadata",
    "replan_sync_update",
    "writes_in",
]

PLAN_COLUMNS: tuple[str, ...] = (
    "action",
    "customer_id",
    "user_id",
    "params",
    "before",
    "reason",
    "idempotency_key",
)

ACTION_SKIP = "skip"
ACTION_UPDATE_CUSTOMER = "update_customer"
ACTION_LINK_USER = "link_user"
ACTION_CREATE_AND_LINK = "create_customer_and_link"
ACTION_DELETE_CUSTOMER = "delete_customer"
ACTION_TAG_DUPLICATE = "tag_duplicate"
ACTION_CLEAR_LINK = "clear_link"
ACTION_SET_DEFAULT_PM = "set_default_payment_method"


@dataclass(frozen=True)
class _Row:
    action: str
    customer_id: str
    user_id: str
    params: Mapping[str, Any]
    before: Mapping[str, Any]
    reason: str
    # The idempotency key's object: the customer, or `user:<id>` for a customer to create.
    key_object: str = ""


def empty_plan() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series([], dtype=STRING_DTYPE) for column in PLAN_COLUMNS})


def _plan(job: str, intent: str, rows: Iterable[_Row]) -> pd.DataFrame:
    records = []
    for row in rows:
        key_object = row.key_object or row.customer_id or f"user:{row.user_id}"
        records.append(
            {
                "action": row.action,
                "customer_id": row.customer_id,
                "user_id": row.user_id,
                "params": canonical_json(row.params),
                "before": canonical_json(row.before),
                "reason": row.reason,
                "idempotency_key": idempotency_key(
                    job, key_object, row.action, row.params, state=row.before, intent=intent
                ),
            }
        )
    if not records:
        return empty_plan()
    frame = pd.DataFrame.from_records(records, columns=list(PLAN_COLUMNS)).astype(STRING_DTYPE)
    # Writes first in a stable order, then the skips: the order a person reads them in.
    frame["_skip"] = frame["action"] == ACTION_SKIP
    frame = frame.sort_values(["_skip", "action", "customer_id", "user_id"], kind="stable")
    return frame.drop(columns="_skip").reset_index(drop=True)


def writes_in(plan: pd.DataFrame) -> pd.DataFrame:
    """The rows that change something (every action but `skip`)."""
    return plan[(plan["action"] != ACTION_SKIP).to_numpy()].reset_index(drop=True)


def _of_kind(findings: pd.DataFrame, kind: FindingKind) -> pd.DataFrame:
    return findings[(findings["kind"] == kind.value).to_numpy()]


def _text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    return str(value)


# --- sync-metadata ------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncOptions:
    sync_email: bool = False
    sync_name: bool = False
    delete_when_null: bool = True
    # The metadata key that holds the user's own id: its value is the user id, not a column.
    user_id_metadata_key: str = "user_id"


def plan_sync_metadata(
    findings: pd.DataFrame,
    current_metadata: Mapping[str, Mapping[str, str]],
    options: SyncOptions,
    *,
    intent: str,
    job: str = "sync-metadata",
) -> pd.DataFrame:
    """One `update_customer` per customer with stale fields, all its changes merged.

    From `stale_metadata` findings (singly linked, in-scope pairs). A NULL column deletes
    its key ("") when `delete_when_null`; a NULL email or name is never pushed. Updates
    that would break Stripe's metadata limits (over `current_metadata`) become skips.
    """
    stale = _of_kind(findings, FindingKind.STALE_METADATA)
    rows: list[_Row] = []
    for customer_id, group in stale.groupby("customer_id", sort=True):
        cid = str(customer_id)
        metadata: dict[str, str] = {}
        before_meta: dict[str, str | None] = {}
        params: dict[str, Any] = {}
        before: dict[str, Any] = {}
        fields: list[str] = []
        user_ids = sorted(set(group["user_id"].astype(str)))
        for finding in group.itertuples(index=False):
            field, local, stripe = (
                str(finding.field),
                str(finding.local_value),
                str(finding.stripe_value),
            )
            if field.startswith("metadata."):
                key = field.removeprefix("metadata.")
                if local == "" and not options.delete_when_null:
                    continue
                metadata[key] = local
                before_meta[key] = stripe or None
                fields.append(field)
            elif field in ("email", "name"):
                wanted = options.sync_email if field == "email" else options.sync_name
                if wanted and local != "":
                    params[field] = local
                    before[field] = stripe or None
                    fields.append(field)
        if metadata:
            params["metadata"] = metadata
            before["metadata"] = before_meta
        if not params:
            continue
        user_id = user_ids[0] if len(user_ids) == 1 else ""
        problems = metadata_violations(metadata, current_metadata.get(cid, {}))
        if problems:
            rows.append(
                _Row(
                    ACTION_SKIP,
                    cid,
                    user_id,
                    params,
                    before,
                    "skipped: Stripe would refuse it: " + "; ".join(problems),
                )
            )
            continue
        reason = f"sync {', '.join(sorted(fields))} from user {user_id}"
        rows.append(_Row(ACTION_UPDATE_CUSTOMER, cid, user_id, params, before, reason))
    return _plan(job, intent, rows)


@dataclass(frozen=True)
class SyncReplan:
    """A planned sync-metadata update checked against the customer and the user as they
    are now: `params` and `before` to write (empty: nothing left to write), or `skip`, the
    reason it must not be written."""

    params: Mapping[str, Any]
    before: Mapping[str, Any]
    skip: str = ""


def _held(value: Any) -> str:
    # A blank value and an absent one are the same to the comparison (compare_all).
    text = _text(value)
    return text if text.strip() else ""


def replan_sync_update(
    planned_params: Mapping[str, Any],
    customer: Mapping[str, Any],
    user: Mapping[str, Any] | None,
    options: SyncOptions,
) -> SyncReplan:
    """The fields of a planned update, recomputed from the fresh customer and the fresh
    user row (snapshot form: `email`, `name`, `customer_id`, `deleted`, `meta.<key>`).

    Only the fields the plan touched are looked at; each is written when the user's value
    still differs from the customer's, with the customer's current value as `before`.
    """
    customer_id = _text(customer.get("id"))
    if customer.get("deleted"):
        return SyncReplan({}, {}, f"customer {customer_id} was deleted")
    if user is None:
        return SyncReplan({}, {}, "the user is no longer in the user DB")
    if bool(user.get("deleted")):
        return SyncReplan({}, {}, f"user {_text(user.get('user_id'))} is soft-deleted")
    linked = _text(user.get("customer_id")).strip()
    if linked and linked != customer_id:
        return SyncReplan(
            {}, {}, f"user {_text(user.get('user_id'))} now links to another customer"
        )
    current_metadata = dict(customer.get("metadata") or {})
    metadata: dict[str, str] = {}
    before_meta: dict[str, str | None] = {}
    for key in planned_params.get("metadata") or {}:
        wanted = _text(
            user.get("user_id") if key == options.user_id_metadata_key else user.get(f"meta.{key}")
        )
        current = current_metadata.get(key)
        if _held(wanted) == _held(current):
            continue
        if not _held(wanted):
            if not options.delete_when_null:
                continue
            wanted = ""
        metadata[key] = wanted
        before_meta[key] = current or None
    params: dict[str, Any] = {}
    before: dict[str, Any] = {}
    for field in ("email", "name"):
        if field not in planned_params:
            continue
        wanted, current = _text(user.get(field)), _text(customer.get(field))
        if not wanted.strip():
            continue  # a NULL email or name is never pushed
        same = (
            wanted.strip().casefold() == current.strip().casefold()
            if field == "email"
            else wanted.strip() == current.strip()
        )
        if not same:
            params[field] = wanted
            before[field] = current or None
    if metadata:
        params["metadata"] = metadata
        before["metadata"] = before_meta
        problems = metadata_violations(metadata, current_metadata)
        if problems:
            return SyncReplan({}, {}, "Stripe would refuse it: " + "; ".join(problems))
    return SyncReplan(params, before)


# --- link-users ---------------------------------------------------------------------------


def plan_link_users(
    findings: pd.DataFrame,
    users: pd.DataFrame,
    *,
    create_missing: bool = False,
    user_id_metadata_key: str = "user_id",
    scope: Mapping[str, str] | None = None,
    intent: str,
    job: str = "link-users",
) -> pd.DataFrame:
    """`link_user` for each `unlinked_user` with exactly one match; ambiguous ones are skips.

    With `create_missing`, every other non-deleted user without a customer id and without
    any match gets `create_customer_and_link` (email, name, metadata user id and the scope
    keys, so the new customer is in scope and matches its user on the next run).
    """
    unlinked = _of_kind(findings, FindingKind.UNLINKED_USER)
    rows: list[_Row] = []
    for finding in unlinked.itertuples(index=False):
        user_id, customer_id = str(finding.user_id), str(finding.customer_id)
        if customer_id:
            rows.append(
                _Row(
                    ACTION_LINK_USER,
                    customer_id,
                    user_id,
                    {"customer_id": customer_id},
                    {"customer_id": None},
                    f"the only Stripe customer matching user {user_id}",
                )
            )
        else:
            related = str(finding.related_ids).replace(";", ", ")
            rows.append(
                _Row(
                    ACTION_SKIP,
                    "",
                    user_id,
                    {},
                    {},
                    f"skipped: several customers match user {user_id} ({related}); "
                    "review manually or run dedupe",
                )
            )
    if create_missing:
        matched = set(unlinked["user_id"].astype(str))
        wanted = users[(~users["deleted"].astype(bool) & users["customer_id"].isna()).to_numpy()]
        for user in wanted.itertuples(index=False):
            user_id = _text(user.user_id)
            if not user_id or user_id in matched:
                continue
            params: dict[str, Any] = {}
            email, name = _text(user.email).strip(), _text(user.name).strip()
            if email:
                params["email"] = email
            if name:
                params["name"] = name
            params["metadata"] = {**dict(scope or {}), user_id_metadata_key: user_id}
            rows.append(
                _Row(
                    ACTION_CREATE_AND_LINK,
                    "",
                    user_id,
                    params,
                    {},
                    f"user {user_id} has no Stripe customer and none matches it",
                    key_object=f"user:{user_id}",
                )
            )
    return _plan(job, intent, rows)


# --- dedupe -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DedupeFacts:
    """Per customer of a duplicate group: frame with `customer_id`, `created` (int),
    `linked` (bool), `payment_methods` (int), `subscriptions` (int), `balance` (int) and
    `duplicate_of` (string or NA)."""

    frame: pd.DataFrame


def _duplicate_groups(findings: pd.DataFrame) -> list[list[str]]:
    """Customers that share a user id or an email, groups joined where they overlap."""
    parent: dict[str, str] = {}

    def find(item: str) -> str:
        while parent.setdefault(item, item) != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    kinds = {FindingKind.DUPLICATE_USER_ID.value, FindingKind.DUPLICATE_EMAIL.value}
    duplicates = findings[findings["kind"].isin(kinds).to_numpy()]
    for finding in duplicates.itertuples(index=False):
        members = [str(finding.customer_id), *str(finding.related_ids).split(";")]
        members = [m for m in members if m]
        for member in members[1:]:
            parent[find(member)] = find(members[0])
        for member in members:
            find(member)
    groups: dict[str, list[str]] = {}
    for item in parent:
        groups.setdefault(find(item), []).append(item)
    return sorted(sorted(members) for members in groups.values() if len(members) > 1)


def plan_dedupe(
    findings: pd.DataFrame, facts: DedupeFacts, *, intent: str, job: str = "dedupe"
) -> pd.DataFrame:
    """For each duplicate group: the canonical customer stays; the others are deleted when
    safe (no payment methods, no subscriptions, zero balance, not linked) and tagged
    `metadata.duplicate_of=<canonical>` otherwise.

    Canonical: linked in the user DB, then has payment methods or subscriptions, then the
    oldest (then the smallest id, so the choice never flips between runs).
    """
    table = facts.frame.drop_duplicates("customer_id").set_index("customer_id", drop=False)
    table.index.name = None
    rows: list[_Row | None] = []
    for members in _duplicate_groups(findings):
        known = [m for m in members if m in table.index]
        if len(known) < 2:
            continue
        info = table.loc[known]
        busy = (info["payment_methods"] > 0) | (info["subscriptions"] > 0)
        order = pd.DataFrame(
            {
                "not_linked": ~info["linked"].astype(bool),
                "idle": ~busy,
                "created": info["created"].astype("int64"),
                "customer_id": info["customer_id"].astype(str),
            }
        ).sort_values(["not_linked", "idle", "created", "customer_id"], kind="stable")
        canonical = str(order["customer_id"].iloc[0])
        for member in order["customer_id"].iloc[1:]:
            row = cast(pd.Series, table.loc[str(member)])
            rows.append(_dedupe_row(str(member), canonical, row))
    return _plan(job, intent, [row for row in rows if row is not None])


def _dedupe_row(customer_id: str, canonical: str, row: pd.Series) -> _Row | None:
    reasons = []
    if bool(row["linked"]):
        reasons.append("linked in the user DB")
    if int(row["payment_methods"]):
        reasons.append(f"{int(row['payment_methods'])} payment method(s)")
    if int(row["subscriptions"]):
        reasons.append(f"{int(row['subscriptions'])} subscription(s)")
    if int(row["balance"]):
        reasons.append(f"balance {int(row['balance'])}")
    before = {"customer_id": customer_id}
    if not reasons:
        return _Row(
            ACTION_DELETE_CUSTOMER,
            customer_id,
            "",
            {},
            before,
            f"duplicate of {canonical}; safe to delete: no payment methods, no subscriptions, "
            "zero balance, not linked",
        )
    tagged = _text(row["duplicate_of"])
    if tagged == canonical:
        return None
    return _Row(
        ACTION_TAG_DUPLICATE,
        customer_id,
        "",
        {"metadata": {"duplicate_of": canonical}},
        {"metadata": {"duplicate_of": tagged or None}},
        f"duplicate of {canonical}, kept: {', '.join(reasons)}",
    )


# --- gdpr-delete --------------------------------------------------------------------------


def plan_gdpr_delete(
    findings: pd.DataFrame,
    users: pd.DataFrame,
    missing_causes: Mapping[str, str],
    *,
    intent: str,
    live_subscriptions: Mapping[str, Sequence[str]] | None = None,
    job: str = "gdpr-delete",
) -> pd.DataFrame:
    """`delete_customer` (then clear the link) for each soft-deleted user's customer, and
    `clear_link` where the customer a deleted user still points at is already deleted.

    A customer that a non-deleted user links to is never deleted (skip), nor one with
    subscriptions that are not over (`live_subscriptions`: customer id -> their statuses;
    deleting would cancel them at once). Rows hold ids only.
    """
    live = live_subscriptions or {}
    active_links = set(
        users.loc[
            (~users["deleted"].astype(bool) & users["customer_id"].notna()).to_numpy(),
            "customer_id",
        ].astype(str)
    )
    rows: list[_Row] = []
    seen: set[str] = set()
    pending = _of_kind(findings, FindingKind.DELETED_USER_CUSTOMER)
    for finding in pending.sort_values(["customer_id", "user_id"]).itertuples(index=False):
        customer_id, user_id = str(finding.customer_id), str(finding.user_id)
        if customer_id in seen:
            continue
        seen.add(customer_id)
        ids = {"customer_id": customer_id, "user_id": user_id}
        if customer_id in active_links:
            rows.append(
                _Row(
                    ACTION_SKIP,
                    customer_id,
                    user_id,
                    {},
                    ids,
                    "skipped: a user who is not deleted links to this customer; review manually",
                )
            )
            continue
        statuses = sorted(set(live.get(customer_id, ())))
        if statuses:
            rows.append(
                _Row(
                    ACTION_SKIP,
                    customer_id,
                    user_id,
                    {},
                    ids,
                    f"skipped: {len(live[customer_id])} subscription(s) not over "
                    f"({', '.join(statuses)}): deleting the customer would cancel them at "
                    "once; cancel them (or keep the customer) first",
                )
            )
            continue
        rows.append(
            _Row(
                ACTION_DELETE_CUSTOMER,
                customer_id,
                user_id,
                {},
                ids,
                f"user {user_id} is soft-deleted; deleting the customer purges its data",
            )
        )
    deleted_links = users[(users["deleted"].astype(bool) & users["customer_id"].notna()).to_numpy()]
    for user in deleted_links.itertuples(index=False):
        customer_id, user_id = str(user.customer_id), str(user.user_id)
        if customer_id in seen or missing_causes.get(customer_id) != "deleted":
            continue
        rows.append(
            _Row(
                ACTION_CLEAR_LINK,
                customer_id,
                user_id,
                {"customer_id": None},
                {"customer_id": customer_id, "user_id": user_id},
                f"user {user_id} is soft-deleted and its customer is already deleted in Stripe",
            )
        )
    return _plan(job, intent, rows)


# --- default-payment-method ---------------------------------------------------------------


def card_is_expired(exp_month: int, exp_year: int, today: date) -> bool:
    """A card is valid through the last day of its expiry month."""
    return (exp_year, exp_month) < (today.year, today.month)


def plan_default_payment_method(
    customers: pd.DataFrame,
    cards: pd.DataFrame,
    today: date,
    *,
    intent: str,
    gone: Iterable[str] = (),
    job: str = "default-payment-method",
) -> pd.DataFrame:
    """Customers with cards but no default get their newest unexpired card as default.

    `customers`: `customer_id`, `default_payment_method` (NA when none). `cards`:
    `customer_id`, `payment_method_id`, `created` (int), `exp_month`, `exp_year`.
    A customer whose cards have all expired is a skip; so is each of `gone`, the
    customers deleted while their cards were being listed.
    """
    no_default = customers[customers["default_payment_method"].isna().to_numpy()]
    wanted = set(no_default["customer_id"].astype(str))
    theirs = cards[cards["customer_id"].astype(str).isin(wanted).to_numpy()]
    rows: list[_Row] = [
        _Row(ACTION_SKIP, cid, "", {}, {}, "skipped: the customer was deleted during the run")
        for cid in sorted(set(gone))
    ]
    for customer_id, group in theirs.groupby("customer_id", sort=True):
        cid = str(customer_id)
        ordered = group.sort_values(["created", "payment_method_id"], ascending=[False, True])
        valid = [
            str(pm_id)
            for pm_id, month, year in zip(
                ordered["payment_method_id"],
                ordered["exp_month"].astype(int),
                ordered["exp_year"].astype(int),
                strict=True,
            )
            if not card_is_expired(int(month), int(year), today)
        ]
        if not valid:
            rows.append(
                _Row(
                    ACTION_SKIP,
                    cid,
                    "",
                    {},
                    {"default_payment_method": None},
                    f"skipped: all {len(group)} card(s) have expired",
                )
            )
            continue
        rows.append(
            _Row(
                ACTION_SET_DEFAULT_PM,
                cid,
                "",
                {"invoice_settings": {"default_payment_method": valid[0]}},
                {"default_payment_method": None},
                f"newest unexpired of {len(group)} card(s)",
            )
        )
    return _plan(job, intent, rows)
