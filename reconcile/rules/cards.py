"""Card expiry arithmetic and the card finding rules: DataFrames in, DataFrames out.

A card is valid through the last day of its expiry month, in UTC. `days_left` counts
whole days from `today` to that last day: 0 means it expires today (still valid), -1
that it expired yesterday. A card is *expiring* when 0 <= days_left <= the window, and
*expired* when days_left < 0. `today` is always a parameter; nothing here reads a clock.

The cards frame (`CARD_COLUMNS`) holds one row per card: the customer's default card
only (default scope) or every attached card (`--all-cards`). The people frame
(`PEOPLE_COLUMNS`) says, per customer, who it is: the linked user id, the email and
name a reminder goes to.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

import pandas as pd

from reconcile.rules.card_rows import card_from_object
from reconcile.rules.findings import (
    STRING_DTYPE,
    FindingKind,
    concat_findings,
    empty_findings,
    findings_from_columns,
)
from reconcile.rules.snapshots import meta_column

__all__ = [
    "CARD_COLUMNS",
    "PEOPLE_COLUMNS",
    "REMINDER_COLUMNS",
    "card_expired",
    "card_expiring",
    "card_findings",
    "card_from_object",
    "cards_frame",
    "customer_people",
    "duplicate_card",
    "expiry_date",
    "missing_default_payment_method",
    "reminder_candidates",
    "with_expiry",
]

CARD_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "payment_method_id",
    "brand",
    "last4",
    "exp_month",
    "exp_year",
    "fingerprint",
    "is_default",
)
PEOPLE_COLUMNS: tuple[str, ...] = ("customer_id", "user_id", "email", "name")
REMINDER_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "user_id",
    "email",
    "name",
    "brand",
    "last4",
    "exp_month",
    "exp_year",
    "expires_on",
    "days_left",
    "is_default",
)
_ACTION_EXPIRING = "remind the customer to update the card before it expires"
_ACTION_EXPIRED = "ask the customer for a new card and detach the expired one"


def expiry_date(exp_year: int, exp_month: int) -> date:
    """The last day on which a card expiring (exp_month, exp_year) is valid."""
    if not 1 <= exp_month <= 12:
        raise ValueError(f"exp_month {exp_month} is not a month (1 to 12)")
    return date(exp_year, exp_month, calendar.monthrange(exp_year, exp_month)[1])


def cards_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Card rows (`card_from_object`) to a frame, sorted by customer and card for stable output."""
    frame = pd.DataFrame.from_records(rows, columns=list(CARD_COLUMNS))
    for column in ("customer_id", "payment_method_id", "brand", "last4", "fingerprint"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
        frame[column] = frame[column].astype(STRING_DTYPE)
    for column in ("exp_month", "exp_year"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    frame["is_default"] = frame["is_default"].fillna(False).astype(bool)
    return frame.sort_values(["customer_id", "payment_method_id"], ignore_index=True)


def with_expiry(cards: pd.DataFrame, today: date) -> pd.DataFrame:
    """`cards` plus `expires_on` (a date) and `days_left` (Int64); NA where expiry is unusable."""
    out = cards.copy()
    pairs = list(zip(out["exp_year"], out["exp_month"], strict=True))
    # A few hundred distinct months however many cards: compute each once.
    known: dict[tuple[Any, Any], date | None] = {}
    for pair in set(pairs):
        year, month = pair
        usable = not (pd.isna(year) or pd.isna(month)) and 1 <= int(month) <= 12
        known[pair] = expiry_date(int(year), int(month)) if usable else None
    expires = [known[pair] for pair in pairs]
    out["expires_on"] = pd.Series(expires, index=out.index, dtype=object)
    out["days_left"] = pd.array(
        [None if d is None else (d - today).days for d in expires], dtype="Int64"
    )
    return out


def customer_people(
    customers: pd.DataFrame, users: pd.DataFrame, user_id_metadata_key: str
) -> pd.DataFrame:
    """Per customer: the user linked to it (else its metadata user id), and email and name.

    Stripe's email and name come first (that is where Stripe sends receipts); the linked
    user's fill the gaps.
    """
    linked = users.dropna(subset=["customer_id"]).sort_values("user_id", kind="stable")
    linked = linked.drop_duplicates("customer_id")[["customer_id", "user_id", "email", "name"]]
    linked = linked.rename(columns={"user_id": "l_uid", "email": "l_email", "name": "l_name"})
    merged = customers[["customer_id", "email", "name"]].merge(linked, on="customer_id", how="left")
    meta_uid_column = meta_column(user_id_metadata_key)
    meta_uid = (
        customers[meta_uid_column].reset_index(drop=True)
        if meta_uid_column in customers.columns
        else pd.Series(pd.NA, index=range(len(customers)), dtype=STRING_DTYPE)
    )
    people = pd.DataFrame(
        {
            "customer_id": merged["customer_id"].astype(STRING_DTYPE),
            "user_id": merged["l_uid"].astype(STRING_DTYPE).fillna(meta_uid.astype(STRING_DTYPE)),
            "email": _blank_na(merged["email"]).fillna(_blank_na(merged["l_email"])),
            "name": _blank_na(merged["name"]).fillna(_blank_na(merged["l_name"])),
        }
    )
    return people


def _blank_na(values: pd.Series) -> pd.Series:
    text = values.astype(STRING_DTYPE).str.strip()
    return text.mask(text.eq("").fillna(False))


def _with_people(cards: pd.DataFrame, people: pd.DataFrame) -> pd.DataFrame:
    return cards.merge(people, on="customer_id", how="left")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _card_text(row: Mapping[str, Any]) -> str:
    brand = row["brand"] if pd.notna(row["brand"]) else "card"
    last4 = row["last4"] if pd.notna(row["last4"]) else "????"
    return f"{brand} ending {last4} ({row['payment_method_id']})"


def _expiring_detail(row: Mapping[str, Any]) -> str:
    n = int(row["days_left"])
    role = "the default payment method" if row["is_default"] else "attached, not the default"
    left = "expires today" if n == 0 else _plural(n, "day") + " left"
    return f"{_card_text(row)}, {role}, is valid through {row['expires_on']} ({left})"


def _expired_detail(row: Mapping[str, Any]) -> str:
    n = -int(row["days_left"])
    still = "is still the default payment method" if row["is_default"] else "is still attached"
    return (
        f"{_card_text(row)} expired after {row['expires_on']} ({_plural(n, 'day')} ago) and {still}"
    )


def _per_row(frame: pd.DataFrame, text: Callable[[Mapping[str, Any]], str]) -> pd.Series:
    # Row by row: findings are a small share of the cards, and this stays right on empty input.
    values = [text({str(k): v for k, v in row.items()}) for row in frame.to_dict("records")]
    return pd.Series(values, index=frame.index, dtype=STRING_DTYPE)


def _expiry_findings(
    kind: FindingKind,
    hits: pd.DataFrame,
    detail: Callable[[Mapping[str, Any]], str],
    action: str,
) -> pd.DataFrame:
    hits = hits.assign(expires_on=hits["expires_on"].map(str, na_action="ignore"))
    return findings_from_columns(
        kind,
        len(hits),
        {
            "customer_id": hits["customer_id"],
            "user_id": hits["user_id"],
            "email": hits["email"],
            "field": "card",
            "stripe_value": hits["expires_on"],
            "related_ids": hits["payment_method_id"],
            "detail": _per_row(hits, detail),
            "suggested_action": action,
        },
    )


def card_expiring(
    cards: pd.DataFrame, people: pd.DataFrame, today: date, days: int
) -> pd.DataFrame:
    """One finding per card that expires today or within `days` days."""
    dated = with_expiry(cards, today)
    left = dated["days_left"]
    hits = _with_people(dated[((left >= 0) & (left <= days)).fillna(False)], people)
    return _expiry_findings(FindingKind.CARD_EXPIRING, hits, _expiring_detail, _ACTION_EXPIRING)


def card_expired(cards: pd.DataFrame, people: pd.DataFrame, today: date) -> pd.DataFrame:
    """One finding per card whose last valid day is before `today` and is still on file."""
    dated = with_expiry(cards, today)
    hits = _with_people(dated[(dated["days_left"] < 0).fillna(False)], people)
    return _expiry_findings(FindingKind.CARD_EXPIRED, hits, _expired_detail, _ACTION_EXPIRED)


def missing_default_payment_method(
    cards: pd.DataFrame, customers: pd.DataFrame, people: pd.DataFrame
) -> pd.DataFrame:
    """One finding per customer with cards attached and no default payment method.

    `customers` needs `customer_id` and `default_payment_method` (an id or NA); needs
    every card of each customer (the `--all-cards` scope).
    """
    without_default = customers.loc[
        customers["default_payment_method"].isna(), "customer_id"
    ].astype(STRING_DTYPE)
    hits = cards[cards["customer_id"].isin(set(without_default.dropna()))]
    if hits.empty:
        return empty_findings()
    grouped = (
        hits.groupby("customer_id", sort=True)["payment_method_id"]
        .agg(lambda ids: ";".join(sorted(str(i) for i in ids)))
        .reset_index()
    )
    grouped = _with_people(grouped, people)
    return findings_from_columns(
        FindingKind.MISSING_DEFAULT_PAYMENT_METHOD,
        len(grouped),
        {
            "customer_id": grouped["customer_id"],
            "user_id": grouped["user_id"],
            "email": grouped["email"],
            "field": "invoice_settings.default_payment_method",
            "related_ids": grouped["payment_method_id"],
            "detail": _per_row(
                grouped,
                lambda r: (
                    f"{_plural(str(r['payment_method_id']).count(';') + 1, 'card')} "
                    "attached but no default payment method: invoices and subscriptions have no "
                    "card to charge"
                ),
            ),
            "suggested_action": "set one of the attached cards as the default payment method",
        },
    )


def duplicate_card(cards: pd.DataFrame, people: pd.DataFrame) -> pd.DataFrame:
    """One finding per (customer, fingerprint) attached more than once to that customer.

    The same number at two different customers (a family card) is not a duplicate.
    """
    usable = cards.dropna(subset=["fingerprint"])
    sizes = usable.groupby(["customer_id", "fingerprint"])["payment_method_id"].transform("size")
    dups = usable[sizes > 1]
    if dups.empty:
        return empty_findings()
    grouped = (
        dups.groupby(["customer_id", "fingerprint"], sort=True)
        .agg(
            ids=("payment_method_id", lambda ids: ";".join(sorted(str(i) for i in ids))),
            brand=("brand", "first"),
            last4=("last4", "first"),
            count=("payment_method_id", "size"),
        )
        .reset_index()
    )
    grouped = _with_people(grouped, people)
    return findings_from_columns(
        FindingKind.DUPLICATE_CARD,
        len(grouped),
        {
            "customer_id": grouped["customer_id"],
            "user_id": grouped["user_id"],
            "email": grouped["email"],
            "field": "card.fingerprint",
            "stripe_value": grouped["fingerprint"],
            "related_ids": grouped["ids"],
            "detail": _per_row(
                grouped,
                lambda r: (
                    f"the same {_card_text({**r, 'payment_method_id': r['fingerprint']})} "
                    f"is attached {r['count']} times"
                ),
            ),
            "suggested_action": "detach the extra copies, keeping the default one",
        },
    )


def card_findings(
    cards: pd.DataFrame,
    customers: pd.DataFrame,
    people: pd.DataFrame,
    today: date,
    *,
    days: int,
    all_cards: bool,
) -> pd.DataFrame:
    """Every card finding; the per-customer rules only when `cards` holds every card."""
    parts = [card_expiring(cards, people, today, days), card_expired(cards, people, today)]
    if all_cards:
        parts += [
            missing_default_payment_method(cards, customers, people),
            duplicate_card(cards, people),
        ]
    return concat_findings(parts)


def reminder_candidates(
    cards: pd.DataFrame, people: pd.DataFrame, today: date, days: int
) -> pd.DataFrame:
    """Cards a customer should hear about, soonest first: `REMINDER_COLUMNS` + `payment_method_id`.

    Expiring cards, and expired cards that are still the default (the next invoice fails).
    Customers without any email address cannot be reminded and are left out.
    """
    dated = with_expiry(cards, today)
    left = dated["days_left"]
    wanted = ((left >= 0) & (left <= days)) | ((left < 0) & dated["is_default"])
    rows = _with_people(dated[wanted.fillna(False)], people)
    rows = rows[rows["email"].notna()]
    out = pd.DataFrame(
        {
            "customer_id": rows["customer_id"].astype(STRING_DTYPE),
            "user_id": rows["user_id"].astype(STRING_DTYPE),
            "email": rows["email"].astype(STRING_DTYPE),
            "name": rows["name"].astype(STRING_DTYPE),
            "brand": rows["brand"].astype(STRING_DTYPE),
            "last4": rows["last4"].astype(STRING_DTYPE),
            "exp_month": rows["exp_month"].astype("Int64"),
            "exp_year": rows["exp_year"].astype("Int64"),
            "expires_on": rows["expires_on"].map(date.isoformat).astype(STRING_DTYPE),
            "days_left": rows["days_left"].astype("Int64"),
            "is_default": rows["is_default"].astype(bool),
            "payment_method_id": rows["payment_method_id"].astype(STRING_DTYPE),
        }
    )
    return out.sort_values(
        ["days_left", "customer_id", "payment_method_id"], kind="stable", ignore_index=True
    )
