"""The customer-side finding rules: snapshots in, findings out; no I/O, no clock.

Semantics shared by every rule:
- "Absent" is NA or the empty string. Emails match trimmed and case-insensitively
  (strip + casefold); metadata values compare as exact strings; names compare stripped.
- Scope: a customer is in scope when every `scope` key's metadata equals the scope value,
  or when some user (deleted or not) links to it explicitly. Out-of-scope customers are
  invisible to every rule; they still count as "listed" for `missing_customer`.
- A customer matches a user by explicit link (`users.customer_id`), by metadata user id,
  or by normalized email. Soft-deleted users count for matching.

Everything is merges and group-bys, so the cost grows with the size of the snapshots and
the number of anomalies, never with their product.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from reconcile.rules.findings import (
    FindingKind,
    concat_findings,
    findings_from_columns,
    insert_kind,
)
from reconcile.rules.snapshots import STRING_DTYPE, meta_column

__all__ = [
    "CompareConfig",
    "Comparison",
    "MissingCause",
    "compare_all",
    "deleted_user_customer",
    "duplicate_email",
    "duplicate_link",
    "duplicate_user_id",
    "in_scope",
    "missing_customer",
    "missing_customer_ids",
    "orphan_customer",
    "stale_metadata",
    "unlinked_user",
]

MissingCause = Literal["deleted", "other_mode", "absent"]


@dataclass(frozen=True)
class CompareConfig:
    """What to compare: the metadata key holding the user id, mapped keys, and the scope."""

    user_id_metadata_key: str = "user_id"
    metadata_keys: tuple[str, ...] = ()
    compare_email: bool = True
    compare_name: bool = True
    scope: Mapping[str, str] = field(default_factory=dict)
    # The key's mode ("test" or "live"), so a missing customer of the other mode is
    # explained in plain words; None keeps the sentence generic.
    key_mode: Literal["test", "live"] | None = None

    def customer_metadata_keys(self) -> tuple[str, ...]:
        """Every metadata key the customers snapshot must carry for these rules."""
        keys = (self.user_id_metadata_key, *self.metadata_keys, *self.scope)
        return tuple(dict.fromkeys(keys))


# --- preparation -------------------------------------------------------------------------


def _blank_to_na(values: pd.Series) -> pd.Series:
    values = values.astype(STRING_DTYPE)
    return values.mask(values.eq("").fillna(False))


def _normalized_email(values: pd.Series) -> pd.Series:
    return _blank_to_na(values.astype(STRING_DTYPE).str.strip().str.casefold())


def _stripped(values: pd.Series) -> pd.Series:
    return _blank_to_na(values.astype(STRING_DTYPE).str.strip())


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name].astype(STRING_DTYPE)
    return pd.Series(pd.array([None] * len(frame), dtype=STRING_DTYPE), index=frame.index)


def _arrow_strings(values: pd.Series) -> pa.Array:
    return pa.array(values.astype(STRING_DTYPE).array).cast(pa.large_string())


def _isin(values: pd.Series, pool: pd.Series) -> pd.Series:
    """Membership of `values` in the non-absent values of `pool`; absent is never a member.

    pyarrow's hash lookup, because pandas' isin on Arrow strings goes through Python objects.
    """
    value_set = _arrow_strings(pool).drop_null().unique()
    hits = pc.is_in(_arrow_strings(values), value_set=value_set).fill_null(False)
    return pd.Series(hits.to_numpy(zero_copy_only=False), index=values.index, dtype=bool)


def _text(values: pd.Series) -> pd.Series:
    """Values as contract strings, absent as ""."""
    return values.astype(STRING_DTYPE).fillna("").reset_index(drop=True)


def in_scope(customers: pd.DataFrame, users: pd.DataFrame, config: CompareConfig) -> pd.Series:
    """Boolean mask over `customers`: inside the metadata scope, or linked by some user."""
    mask = pd.Series(True, index=customers.index)
    for key, wanted in config.scope.items():
        mask &= _column(customers, meta_column(key)).eq(wanted).fillna(False).astype(bool)
    linked = _isin(customers["customer_id"].astype(STRING_DTYPE), _users_customer_ids(users))
    return mask | linked


def _users_customer_ids(users: pd.DataFrame) -> pd.Series:
    return _stripped(_column(users, "customer_id"))


def _deleted(users: pd.DataFrame) -> pd.Series:
    if "deleted" in users.columns:
        return users["deleted"].fillna(False).astype(bool)
    return pd.Series(False, index=users.index)


@dataclass(frozen=True)
class _Snapshots:
    """Both snapshots, normalized once and shared by every rule."""

    customers: pd.DataFrame  # in scope only
    listed_ids: pd.Series  # every listed customer id, before scope
    users: pd.DataFrame
    config: CompareConfig


def _prepare(customers: pd.DataFrame, users: pd.DataFrame, config: CompareConfig) -> _Snapshots:
    scoped = customers[in_scope(customers, users, config).to_numpy()]
    cust = pd.DataFrame(
        {
            "customer_id": scoped["customer_id"].astype(STRING_DTYPE),
            "created": scoped["created"].astype("int64"),
            "email": _column(scoped, "email"),
            "email_norm": _normalized_email(_column(scoped, "email")),
            "name": _column(scoped, "name"),
            "uid": _blank_to_na(_column(scoped, meta_column(config.user_id_metadata_key))),
        }
    )
    for key in config.metadata_keys:
        cust[meta_column(key)] = _column(scoped, meta_column(key))
    cust = cust.reset_index(drop=True)

    local = pd.DataFrame(
        {
            "user_id": _stripped(_column(users, "user_id")),
            "email": _column(users, "email"),
            "email_norm": _normalized_email(_column(users, "email")),
            "name": _column(users, "name"),
            "customer_id": _users_customer_ids(users),
            "deleted": _deleted(users),
        }
    )
    for key in config.metadata_keys:
        local[meta_column(key)] = _column(users, meta_column(key))
    local = local[local["user_id"].notna().to_numpy()].reset_index(drop=True)
    listed = customers["customer_id"].astype(STRING_DTYPE).reset_index(drop=True)
    return _Snapshots(customers=cust, listed_ids=listed, users=local, config=config)


# --- the rules, on prepared snapshots ----------------------------------------------------


def _groups_by_oldest(cust: pd.DataFrame, key: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers sharing a non-absent `key`: the oldest of each group, and the others' ids."""
    keyed = cust[cust[key].notna().to_numpy()]
    keyed = keyed[keyed[key].duplicated(keep=False).to_numpy()]
    keyed = keyed.sort_values([key, "created", "customer_id"], kind="stable")
    is_oldest = ~keyed[key].duplicated()
    oldest = keyed[is_oldest.to_numpy()].reset_index(drop=True)
    others = keyed[(~is_oldest).to_numpy()].sort_values([key, "customer_id"], kind="stable")
    grouped = others.groupby(key, sort=False)["customer_id"]
    related = grouped.agg(";".join)
    sizes = grouped.size() + 1
    groups = pd.DataFrame({"related": related, "size": sizes}).reindex(oldest[key])
    return oldest, groups.reset_index(drop=True)


def _duplicate_user_id(s: _Snapshots) -> pd.DataFrame:
    oldest, groups = _groups_by_oldest(s.customers, "uid")
    key = s.config.user_id_metadata_key
    detail = (
        groups["size"].astype(str)
        + f" Stripe customers carry metadata {key} = "
        + oldest["uid"].astype(str)
        + "; the oldest is "
        + oldest["customer_id"].astype(str)
        + "."
    )
    return findings_from_columns(
        FindingKind.DUPLICATE_USER_ID,
        len(oldest),
        {
            "customer_id": _text(oldest["customer_id"]),
            "user_id": _text(oldest["uid"]),
            "email": _text(oldest["email"]),
            "stripe_value": _text(oldest["uid"]),
            "related_ids": _text(groups["related"]),
            "detail": detail,
            "suggested_action": "run dedupe",
        },
    )


def _duplicate_email(s: _Snapshots) -> pd.DataFrame:
    oldest, groups = _groups_by_oldest(s.customers, "email_norm")
    detail = (
        groups["size"].astype(str)
        + " Stripe customers share this email (ignoring case and spaces); the oldest is "
        + oldest["customer_id"].astype(str)
        + "."
    )
    return findings_from_columns(
        FindingKind.DUPLICATE_EMAIL,
        len(oldest),
        {
            "customer_id": _text(oldest["customer_id"]),
            "email": _text(oldest["email"]),
            "related_ids": _text(groups["related"]),
            "detail": detail,
            "suggested_action": "run dedupe",
        },
    )


def _duplicate_link(s: _Snapshots) -> pd.DataFrame:
    linked = s.users[s.users["customer_id"].notna().to_numpy()]
    linked = linked[linked["customer_id"].duplicated(keep=False).to_numpy()]
    linked = linked.sort_values(["customer_id", "user_id"], kind="stable")
    is_first = ~linked["customer_id"].duplicated()
    first = linked[is_first.to_numpy()].reset_index(drop=True)
    others = linked[(~is_first).to_numpy()].groupby("customer_id", sort=False)["user_id"]
    groups = pd.DataFrame({"related": others.agg(";".join), "size": others.size() + 1})
    groups = groups.reindex(first["customer_id"]).reset_index(drop=True)
    detail = (
        groups["size"].astype(str)
        + " local users point at Stripe customer "
        + first["customer_id"].astype(str)
        + "."
    )
    return findings_from_columns(
        FindingKind.DUPLICATE_LINK,
        len(first),
        {
            "customer_id": _text(first["customer_id"]),
            "user_id": _text(first["user_id"]),
            "email": _text(first["email"]),
            "local_value": _text(first["customer_id"]),
            "related_ids": _text(groups["related"]),
            "detail": detail,
            "suggested_action": "review manually",
        },
    )


def _orphan_customer(s: _Snapshots) -> pd.DataFrame:
    cust, users = s.customers, s.users
    matched = (
        _isin(cust["customer_id"], users["customer_id"])
        | _isin(cust["uid"], users["user_id"])
        | _isin(cust["email_norm"], users["email_norm"])
    )
    orphans = cust[(~matched).to_numpy()].reset_index(drop=True)
    detail = (
        "Stripe customer "
        + orphans["customer_id"].astype(str)
        + " matches no local user by customer id, metadata user id or email."
    )
    return findings_from_columns(
        FindingKind.ORPHAN_CUSTOMER,
        len(orphans),
        {
            "customer_id": _text(orphans["customer_id"]),
            "email": _text(orphans["email"]),
            "stripe_value": _text(orphans["uid"]),
            "detail": detail,
            "suggested_action": "review manually",
        },
    )


def _missing_users(s: _Snapshots) -> pd.DataFrame:
    return _pointing_elsewhere(s.users, s.listed_ids)


def _pointing_elsewhere(users: pd.DataFrame, listed_ids: pd.Series) -> pd.DataFrame:
    """The non-deleted users whose customer id is not among `listed_ids`."""
    pointing = users[(~users["deleted"] & users["customer_id"].notna()).to_numpy()]
    return pointing[(~_isin(pointing["customer_id"], listed_ids)).to_numpy()]


_MISSING_SENTENCES: Mapping[str, tuple[str, str]] = {
    "deleted": (
        ", which has been deleted in Stripe.",
        "clear the user's customer id, then run link-users",
    ),
    "other_mode": (
        ", which exists in the other mode (test vs live), not the mode of this key;"
        " check STRIPE_SECRET_KEY.",
        "check STRIPE_SECRET_KEY",
    ),
    "absent": (", which does not exist in this Stripe account.", "review manually"),
    "": (", which is not in the listing and was not looked up.", "review manually"),
}


def _missing_sentences(key_mode: str | None) -> Mapping[str, tuple[str, str]]:
    if key_mode is None:
        return _MISSING_SENTENCES
    other = "live" if key_mode == "test" else "test"
    return {
        **_MISSING_SENTENCES,
        "other_mode": (
            f", which is a {other}-mode customer while the key is a {key_mode}-mode key: the "
            f"link was written with a {other}-mode key, or STRIPE_SECRET_KEY is of the wrong mode.",
            f"check STRIPE_SECRET_KEY (use a {other}-mode key to reach this customer)",
        ),
    }


def _missing_customer(s: _Snapshots, classification: Mapping[str, MissingCause]) -> pd.DataFrame:
    return _missing_customer_of(_missing_users(s), s.config, classification)


def _missing_customer_of(
    missing: pd.DataFrame, config: CompareConfig, classification: Mapping[str, MissingCause]
) -> pd.DataFrame:
    missing = missing.reset_index(drop=True)
    sentences = _missing_sentences(config.key_mode)
    cause = missing["customer_id"].map(dict(classification)).astype(STRING_DTYPE).fillna("")
    known = cause.isin(list(sentences))
    cause = cause.where(known, "")
    sentence = cause.map({k: v[0] for k, v in sentences.items()}).astype(str)
    action = cause.map({k: v[1] for k, v in sentences.items()}).astype(str)
    detail = (
        "User "
        + missing["user_id"].astype(str)
        + " points at Stripe customer "
        + missing["customer_id"].astype(str)
        + sentence
    )
    return findings_from_columns(
        FindingKind.MISSING_CUSTOMER,
        len(missing),
        {
            "customer_id": _text(missing["customer_id"]),
            "user_id": _text(missing["user_id"]),
            "email": _text(missing["email"]),
            "stripe_value": _text(cause),
            "local_value": _text(missing["customer_id"]),
            "detail": detail,
            "suggested_action": action,
        },
    )


def _unlinked_user(s: _Snapshots) -> pd.DataFrame:
    users, cust = s.users, s.customers
    unlinked = users[(~users["deleted"] & users["customer_id"].isna()).to_numpy()]
    by_uid = unlinked[["user_id"]].merge(
        cust.loc[cust["uid"].notna().to_numpy(), ["customer_id", "uid"]],
        left_on="user_id",
        right_on="uid",
    )[["user_id", "customer_id"]]
    by_email = (
        unlinked.loc[unlinked["email_norm"].notna().to_numpy(), ["user_id", "email_norm"]]
        .merge(cust.loc[cust["email_norm"].notna().to_numpy(), ["customer_id", "email_norm"]])
        .loc[:, ["user_id", "customer_id"]]
    )
    pairs = pd.concat([by_uid, by_email], ignore_index=True).drop_duplicates()
    pairs = pairs.sort_values(["user_id", "customer_id"], kind="stable")
    grouped = pairs.groupby("user_id", sort=True)["customer_id"]
    matches = pd.DataFrame(
        {"related": grouped.agg(";".join), "count": grouped.size(), "first": grouped.first()}
    )
    emails = unlinked.drop_duplicates("user_id").set_index("user_id")["email"]
    matches["email"] = emails.reindex(matches.index)
    matches = matches.reset_index()
    single = matches["count"].eq(1)
    customer_id = matches["first"].astype(STRING_DTYPE).where(single, "")
    detail = (
        "User "
        + matches["user_id"].astype(str)
        + " has no customer id, but "
        + matches["count"].astype(str)
        + " Stripe customer(s) match it by metadata user id or email."
    )
    action = pd.Series("review manually", index=matches.index).where(~single, "run link-users")
    return findings_from_columns(
        FindingKind.UNLINKED_USER,
        len(matches),
        {
            "customer_id": _text(customer_id),
            "user_id": _text(matches["user_id"]),
            "email": _text(matches["email"]),
            "related_ids": _text(matches["related"]),
            "detail": detail,
            "suggested_action": action,
        },
    )


def _differs(stripe: pd.Series, local: pd.Series) -> pd.Series:
    """True where exactly one side is absent, or both are present and unequal."""
    presence_differs = stripe.isna() != local.isna()
    value_differs = stripe.ne(local).fillna(False).astype(bool)
    return (presence_differs | value_differs).astype(bool)


def _sync_action(field_name: str) -> str:
    # sync-metadata writes email and name only when its option says so; without it the
    # plan holds nothing for these findings.
    if field_name in ("email", "name"):
        return f"run sync-metadata with [maintenance] sync_{field_name} = true"
    return "run sync-metadata"


def _stale_metadata(s: _Snapshots) -> pd.DataFrame:
    users, cust, config = s.users, s.customers, s.config
    link_counts = users["customer_id"].value_counts()
    singly_linked = link_counts.index[link_counts.to_numpy() == 1]
    singly = _isin(users["customer_id"], pd.Series(singly_linked, dtype=STRING_DTYPE))
    local = users[(~users["deleted"] & singly).to_numpy()]
    pairs = local.add_prefix("l_").merge(
        cust.add_prefix("s_"), left_on="l_customer_id", right_on="s_customer_id"
    )
    uid_field = f"metadata.{config.user_id_metadata_key}"
    # (field name, Stripe value, local value, Stripe compared, local compared)
    checks: list[tuple[str, pd.Series, pd.Series, pd.Series, pd.Series]] = [
        (uid_field, pairs["s_uid"], pairs["l_user_id"], pairs["s_uid"], pairs["l_user_id"])
    ]
    for key in config.metadata_keys:
        if key == config.user_id_metadata_key:
            continue
        stripe_raw = pairs["s_" + meta_column(key)]
        local_raw = pairs["l_" + meta_column(key)]
        checks.append(
            (
                f"metadata.{key}",
                stripe_raw,
                local_raw,
                _blank_to_na(stripe_raw),
                _blank_to_na(local_raw),
            )
        )
    if config.compare_email:
        checks.append(
            (
                "email",
                pairs["s_email"],
                pairs["l_email"],
                pairs["s_email_norm"],
                pairs["l_email_norm"],
            )
        )
    if config.compare_name:
        checks.append(
            (
                "name",
                pairs["s_name"],
                pairs["l_name"],
                _stripped(pairs["s_name"]),
                _stripped(pairs["l_name"]),
            )
        )
    frames = []
    for field_name, stripe_raw, local_raw, stripe_cmp, local_cmp in checks:
        rows = _differs(stripe_cmp, local_cmp).to_numpy()
        hit = pairs[rows]
        detail = (
            f"Field {field_name} differs between Stripe customer "
            + hit["s_customer_id"].astype(str)
            + " and user "
            + hit["l_user_id"].astype(str)
            + "."
        )
        frames.append(
            findings_from_columns(
                FindingKind.STALE_METADATA,
                len(hit),
                {
                    "customer_id": _text(hit["s_customer_id"]),
                    "user_id": _text(hit["l_user_id"]),
                    "email": _text(hit["l_email"]),
                    "field": field_name,
                    "stripe_value": _text(stripe_raw[rows]),
                    "local_value": _text(local_raw[rows]),
                    "detail": detail,
                    "suggested_action": _sync_action(field_name),
                },
            )
        )
    return concat_findings(frames)


def _deleted_user_customer(s: _Snapshots) -> pd.DataFrame:
    users, cust = s.users, s.customers
    deleted = users[users["deleted"].to_numpy()]
    by_link = deleted[["user_id", "customer_id"]].merge(cust[["customer_id"]])
    by_uid = deleted[["user_id"]].merge(
        cust.loc[cust["uid"].notna().to_numpy(), ["customer_id", "uid"]],
        left_on="user_id",
        right_on="uid",
    )[["user_id", "customer_id"]]
    pairs = pd.concat([by_link, by_uid], ignore_index=True).drop_duplicates()
    pairs = pairs.merge(deleted[["user_id", "email"]].drop_duplicates("user_id"), how="left")
    pairs = pairs.reset_index(drop=True)
    detail = (
        "User "
        + pairs["user_id"].astype(str)
        + " is soft-deleted, but Stripe customer "
        + pairs["customer_id"].astype(str)
        + " still exists."
    )
    return findings_from_columns(
        FindingKind.DELETED_USER_CUSTOMER,
        len(pairs),
        {
            "customer_id": _text(pairs["customer_id"]),
            "user_id": _text(pairs["user_id"]),
            "email": _text(pairs["email"]),
            "detail": detail,
            "suggested_action": "run gdpr-delete",
        },
    )


# --- public entry points -----------------------------------------------------------------


def duplicate_user_id(
    customers: pd.DataFrame, users: pd.DataFrame, config: CompareConfig
) -> pd.DataFrame:
    """One finding per group of 2+ in-scope customers sharing a metadata user id."""
    return concat_findings([_duplicate_user_id(_prepare(customers, users, config))])


def duplicate_email(
    customers: pd.DataFrame, users: pd.DataFrame, config: CompareConfig
) -> pd.DataFrame:
    """One finding per group of 2+ in-scope customers sharing a normalized email."""
    return concat_findings([_duplicate_email(_prepare(customers, users, config))])


def duplicate_link(
    customers: pd.DataFrame, users: pd.DataFrame, config: CompareConfig
) -> pd.DataFrame:
    """One finding per customer id that 2+ local users (deleted or not) point at."""
    return concat_findings([_duplicate_link(_prepare(customers, users, config))])


def orphan_customer(
    customers: pd.DataFrame, users: pd.DataFrame, config: CompareConfig
) -> pd.DataFrame:
    """One finding per in-scope customer that matches no user at all."""
    return concat_findings([_orphan_customer(_prepare(customers, users, config))])


def missing_customer_ids(customers: pd.DataFrame, users: pd.DataFrame) -> list[str]:
    """Customer ids that non-deleted users point at but the listing lacks: look each up once.

    The same users as `missing_customer`'s, from the ids alone: no other column is
    normalized, so the look-ups can start before the snapshots are prepared.
    """
    local = pd.DataFrame({"customer_id": _users_customer_ids(users), "deleted": _deleted(users)})
    listed = customers["customer_id"].astype(STRING_DTYPE)
    pointing = _pointing_elsewhere(local.reset_index(drop=True), listed)
    # Users without a user id are no users (as in _prepare): checked on these few rows only.
    user_ids = _stripped(_column(users, "user_id").iloc[pointing.index.to_numpy()])
    return sorted(set(pointing["customer_id"][user_ids.notna().to_numpy()].astype(str)))


def missing_customer(
    customers: pd.DataFrame,
    users: pd.DataFrame,
    config: CompareConfig,
    missing_classification: Mapping[str, MissingCause],
) -> pd.DataFrame:
    """One finding per non-deleted user pointing at a customer id absent from the listing.

    `stripe_value` carries the cause ("deleted", "other_mode", "absent"; "" when the id was
    not classified) and `detail` says it in a sentence.
    """
    snapshots = _prepare(customers, users, config)
    return concat_findings([_missing_customer(snapshots, missing_classification)])


def unlinked_user(
    customers: pd.DataFrame, users: pd.DataFrame, config: CompareConfig
) -> pd.DataFrame:
    """One finding per non-deleted user without a customer id that in-scope customers match."""
    return concat_findings([_unlinked_user(_prepare(customers, users, config))])


def stale_metadata(
    customers: pd.DataFrame, users: pd.DataFrame, config: CompareConfig
) -> pd.DataFrame:
    """One finding per differing field of a singly, explicitly linked (user, customer) pair."""
    return concat_findings([_stale_metadata(_prepare(customers, users, config))])


def deleted_user_customer(
    customers: pd.DataFrame, users: pd.DataFrame, config: CompareConfig
) -> pd.DataFrame:
    """One finding per (soft-deleted user, in-scope customer linked or carrying its id)."""
    return concat_findings([_deleted_user_customer(_prepare(customers, users, config))])


class Comparison:
    """`compare_all` in two steps: building it prepares the snapshots and applies every
    rule but `missing_customer`, which needs the missing ids classified; `findings` adds
    that rule's rows. A caller looks the missing ids up meanwhile."""

    def __init__(self, customers: pd.DataFrame, users: pd.DataFrame, config: CompareConfig) -> None:
        snapshots = _prepare(customers, users, config)
        self._config = config
        self._missing = _missing_users(snapshots)
        self._others = concat_findings(
            [
                _duplicate_user_id(snapshots),
                _duplicate_email(snapshots),
                _duplicate_link(snapshots),
                _orphan_customer(snapshots),
                _unlinked_user(snapshots),
                _stale_metadata(snapshots),
                _deleted_user_customer(snapshots),
            ]
        )

    def findings(self, missing_classification: Mapping[str, MissingCause]) -> pd.DataFrame:
        """Every rule's findings, in contract order."""
        missing = _missing_customer_of(self._missing, self._config, missing_classification)
        return insert_kind(self._others, concat_findings([missing]))


def compare_all(
    customers: pd.DataFrame,
    users: pd.DataFrame,
    config: CompareConfig,
    missing_classification: Mapping[str, MissingCause],
) -> pd.DataFrame:
    """Every customer-side rule over one preparation of the snapshots, in contract order."""
    return Comparison(customers, users, config).findings(missing_classification)
