"""What changed between two runs' findings: a stable identity per finding, and the diff.

A finding's identity is what stays put while the anomaly stays unsolved: its kind, the
ids it is about (customer, user, the related ids as a set) and the field. Texts that may
change from one day to the next without the anomaly changing (values, detail, suggested
action, email) are left out, so a stale plan `pro` -> `team` -> `max` is one finding
still open, not a resolved one and a new one.

Pure: frames in, frames out, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "IDENTITY_COLUMNS",
    "FindingChanges",
    "FindingIdentity",
    "diff_findings",
    "finding_identities",
    "finding_identity",
]

IDENTITY_COLUMNS: tuple[str, ...] = ("kind", "customer_id", "user_id", "related_ids", "field")

# (kind, customer_id, user_id, related ids sorted and `;`-joined, field)
FindingIdentity = tuple[str, str, str, str, str]


def _text(value: Any) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, float) and value != value:  # NaN
        return ""
    return str(value).strip()


def finding_identity(
    kind: Any, customer_id: Any, user_id: Any, related_ids: Any, field: Any
) -> FindingIdentity:
    """The identity of one finding; `related_ids` is `;`-separated, in any order."""
    related = sorted({part.strip() for part in _text(related_ids).split(";") if part.strip()})
    return (_text(kind), _text(customer_id), _text(user_id), ";".join(related), _text(field))


def _column(findings: pd.DataFrame, name: str) -> list[Any]:
    if name in findings.columns:
        return list(findings[name].tolist())
    return [""] * len(findings)


def finding_identities(findings: pd.DataFrame) -> list[FindingIdentity]:
    """The identity of every row of `findings`, in row order; missing columns read empty."""
    columns = [_column(findings, name) for name in IDENTITY_COLUMNS]
    return [finding_identity(*values) for values in zip(*columns, strict=True)]


@dataclass(frozen=True)
class FindingChanges:
    """`current` against `previous`: rows new in `current`, rows of `previous` now gone.

    Counted in rows: `len(new) + still_open` is the current run's number of findings.
    """

    new: pd.DataFrame
    resolved: pd.DataFrame
    still_open: int

    def counts(self) -> dict[str, int]:
        return {"new": len(self.new), "resolved": len(self.resolved), "still_open": self.still_open}


_SEPARATOR = "\x1f"  # the ASCII unit separator: in no id, kind or field name


def _text_column(findings: pd.DataFrame, name: str) -> pd.Series:
    if name not in findings.columns:
        return pd.Series([""] * len(findings), index=findings.index, dtype=object)
    values = findings[name].astype(object)
    return values.where(values.notna(), "").astype(str).str.strip()


def _identity_keys(findings: pd.DataFrame) -> pd.Series:
    """`finding_identity` of every row as one string, computed column-wise: a run may hold
    a million findings, and only rows with several related ids need sorting one by one."""
    related = pd.Series(
        [
            ";".join(sorted({p.strip() for p in value.split(";") if p.strip()}))
            if ";" in value
            else value
            for value in _text_column(findings, "related_ids").tolist()
        ],
        index=findings.index,
        dtype=object,
    ).astype(str)
    parts = [_text_column(findings, name) for name in ("kind", "customer_id", "user_id")]
    key = parts[0]
    for part in (*parts[1:], related, _text_column(findings, "field")):
        key = key + _SEPARATOR + part
    return key


def diff_findings(previous: pd.DataFrame, current: pd.DataFrame) -> FindingChanges:
    """Which findings of `current` are new since `previous`, and which of `previous` are
    resolved (no finding of `current` has their identity). Rows keep their columns and
    order; a frame without rows may lack columns."""
    before = _identity_keys(previous).tolist()
    now = _identity_keys(current).tolist()
    # Plain sets: far quicker than Series.isin on pandas' string dtype.
    before_set, now_set = set(before), set(now)
    is_new = np.fromiter((key not in before_set for key in now), dtype=bool, count=len(now))
    is_resolved = np.fromiter((key not in now_set for key in before), dtype=bool, count=len(before))
    return FindingChanges(
        new=current.loc[is_new].reset_index(drop=True),
        resolved=previous.loc[is_resolved].reset_index(drop=True),
        still_open=int((~is_new).sum()),
    )
