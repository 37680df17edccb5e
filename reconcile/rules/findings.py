"""The findings contract: one row per anomaly, the same columns in CSV and Parquet alike.

Every value is a string; an absent value is the empty string, never "None" or NaN, so
a report reader never has to tell three kinds of nothing apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

import pandas as pd

__all__ = [
    "CARD_KINDS",
    "CUSTOMER_KINDS",
    "FINDING_COLUMNS",
    "SEVERITY_BY_KIND",
    "SORT_COLUMNS",
    "STRING_DTYPE",
    "FindingKind",
    "Severity",
    "concat_findings",
    "empty_findings",
    "findings_from_columns",
    "insert_kind",
    "make_findings",
]

FINDING_COLUMNS: tuple[str, ...] = (
    "kind",
    "severity",
    "customer_id",
    "user_id",
    "email",
    "field",
    "stripe_value",
    "local_value",
    "related_ids",
    "detail",
    "suggested_action",
)

SORT_COLUMNS: tuple[str, ...] = ("kind", "customer_id", "user_id", "field")

STRING_DTYPE = pd.StringDtype()


class FindingKind(StrEnum):
    DUPLICATE_USER_ID = "duplicate_user_id"
    DUPLICATE_EMAIL = "duplicate_email"
    DUPLICATE_LINK = "duplicate_link"
    ORPHAN_CUSTOMER = "orphan_customer"
    MISSING_CUSTOMER = "missing_customer"
    UNLINKED_USER = "unlinked_user"
    STALE_METADATA = "stale_metadata"
    DELETED_USER_CUSTOMER = "deleted_user_customer"
    CARD_EXPIRING = "card_expiring"
    CARD_EXPIRED = "card_expired"
    MISSING_DEFAULT_PAYMENT_METHOD = "missing_default_payment_method"
    DUPLICATE_CARD = "duplicate_card"


# The kinds each job reports: reconcile the customer side, card-expiry the cards.
CUSTOMER_KINDS: tuple[str, ...] = (
    FindingKind.DUPLICATE_USER_ID,
    FindingKind.DUPLICATE_EMAIL,
    FindingKind.DUPLICATE_LINK,
    FindingKind.ORPHAN_CUSTOMER,
    FindingKind.MISSING_CUSTOMER,
    FindingKind.UNLINKED_USER,
    FindingKind.STALE_METADATA,
    FindingKind.DELETED_USER_CUSTOMER,
)
CARD_KINDS: tuple[str, ...] = (
    FindingKind.CARD_EXPIRING,
    FindingKind.CARD_EXPIRED,
    FindingKind.MISSING_DEFAULT_PAYMENT_METHOD,
    FindingKind.DUPLICATE_CARD,
)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


SEVERITY_BY_KIND: Mapping[FindingKind, Severity] = {
    FindingKind.DUPLICATE_USER_ID: Severity.WARNING,
    FindingKind.DUPLICATE_EMAIL: Severity.WARNING,
    FindingKind.DUPLICATE_LINK: Severity.ERROR,
    FindingKind.ORPHAN_CUSTOMER: Severity.WARNING,
    FindingKind.MISSING_CUSTOMER: Severity.ERROR,
    FindingKind.UNLINKED_USER: Severity.WARNING,
    FindingKind.STALE_METADATA: Severity.INFO,
    FindingKind.DELETED_USER_CUSTOMER: Severity.WARNING,
    FindingKind.CARD_EXPIRING: Severity.INFO,
    FindingKind.CARD_EXPIRED: Severity.WARNING,
    FindingKind.MISSING_DEFAULT_PAYMENT_METHOD: Severity.WARNING,
    FindingKind.DUPLICATE_CARD: Severity.INFO,
}


def _as_contract_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce every contract column to the string dtype with "" for anything absent."""
    out = pd.DataFrame(index=frame.index)
    for column in FINDING_COLUMNS:
        values = frame[column] if column in frame.columns else pd.Series("", index=frame.index)
        if values.dtype != STRING_DTYPE:
            values = values.astype(object).where(values.notna(), "").astype(STRING_DTYPE)
        out[column] = values.fillna("")
    return out.reset_index(drop=True)


def empty_findings() -> pd.DataFrame:
    """A findings frame with no rows and exactly the contract's columns and dtypes."""
    return pd.DataFrame({column: pd.Series([], dtype=STRING_DTYPE) for column in FINDING_COLUMNS})


def make_findings(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build findings from row mappings; a missing severity is taken from the kind."""
    records = [dict(row) for row in rows]
    if not records:
        return empty_findings()
    for record in records:
        unknown = set(record) - set(FINDING_COLUMNS)
        if unknown:
            raise ValueError(
                f"finding has unknown columns {sorted(unknown)}; use {FINDING_COLUMNS}"
            )
        if not record.get("severity"):
            record["severity"] = SEVERITY_BY_KIND[FindingKind(record["kind"])].value
        # Stringify per row: a column mixing ints and NaN would otherwise turn 7 into "7.0".
        for column, value in record.items():
            record[column] = "" if _is_absent(value) else str(value)
    return _as_contract_strings(pd.DataFrame.from_records(records, columns=FINDING_COLUMNS))


def _is_absent(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and value != value  # NaN


def findings_from_columns(
    kind: FindingKind, length: int, columns: Mapping[str, pd.Series | str]
) -> pd.DataFrame:
    """Build `length` findings of one kind from whole columns (the vectorized path).

    Each value is a Series aligned by position, or a scalar string repeated for every row.
    """
    unknown = set(columns) - set(FINDING_COLUMNS)
    if unknown:
        raise ValueError(f"finding columns {sorted(unknown)} are not in {FINDING_COLUMNS}")
    if length == 0:
        return empty_findings()
    data: dict[str, Any] = {
        "kind": kind.value,
        "severity": SEVERITY_BY_KIND[kind].value,
    }
    for name, value in columns.items():
        data[name] = value.reset_index(drop=True) if isinstance(value, pd.Series) else value
    frame = pd.DataFrame(data, index=pd.RangeIndex(length))
    return _as_contract_strings(frame)


def concat_findings(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate findings frames in a deterministic order (kind, customer, user, field)."""
    parts = [_as_contract_strings(frame) for frame in frames if len(frame)]
    if not parts:
        return empty_findings()
    combined = pd.concat(parts, ignore_index=True)
    # The remaining columns break ties so that equal inputs give byte-identical reports.
    order = list(SORT_COLUMNS) + [c for c in FINDING_COLUMNS if c not in SORT_COLUMNS]
    combined = combined.sort_values(order, kind="stable", ignore_index=True)
    return combined


def insert_kind(findings: pd.DataFrame, block: pd.DataFrame) -> pd.DataFrame:
    """`concat_findings([findings, block])` where both are already in its order and `block`
    holds one kind that `findings` lacks: kind sorts first, so the block goes in whole
    where its kind sorts, and nothing is sorted again."""
    if not len(block):
        return findings
    if not len(findings):
        return block
    kinds = set(block["kind"])
    if len(kinds) != 1 or not kinds.isdisjoint(findings["kind"]):
        raise ValueError(f"a block of one kind absent from the findings, not {sorted(kinds)}")
    at = int((findings["kind"] < kinds.pop()).sum())
    return pd.concat([findings.iloc[:at], block, findings.iloc[at:]], ignore_index=True)
