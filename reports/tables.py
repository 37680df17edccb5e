"""Findings and other tables turned into what the report files hold.

The findings contract: exactly FINDING_COLUMNS, in order, every value a string,
absent values empty (never "None" or "nan"), in CSV and Parquet alike.
"""

from __future__ import annotations

import math
import re
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reconcile.findings import FINDING_COLUMNS

__all__ = [
    "FINDING_COLUMNS",
    "cell_text",
    "contract_findings",
    "counts_by_kind",
    "counts_by_kind_and_severity",
    "counts_by_severity",
    "safe_file_stem",
    "to_arrow",
    "write_csv",
    "write_parquet",
]


_SAFE_STEM = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")


def safe_file_stem(name: str, what: str) -> str:
    """`name` if it is safe as a file name stem (lower case, digits, `_`, `-`), else ValueError."""
    if not _SAFE_STEM.match(name):
        raise ValueError(
            f"{what} {name!r} cannot name a report file: use lower-case letters, digits, _ and -"
        )
    return name


def _is_absent(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def cell_text(value: Any) -> str:
    """One finding value as the contract's string: absent is empty."""
    if _is_absent(value):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        # pandas turns an integer column with gaps into floats; a user id 42 must stay "42".
        return str(int(value))
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return ";".join(cell_text(item) for item in items if not _is_absent(item))
    return str(value)


def contract_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """The findings as the contract has them: its columns in order, strings, absent empty.

    Columns outside the contract are dropped. A contract column missing from a
    non-empty frame is a bug in the producer and raises ValueError; an empty frame
    (no findings) may have no columns at all.
    """
    if len(findings) > 0:
        missing = [column for column in FINDING_COLUMNS if column not in findings.columns]
        if missing:
            raise ValueError(
                f"findings lack the contract columns {', '.join(missing)}: "
                "build them with every column of reconcile.findings.FINDING_COLUMNS"
            )
    data = {
        column: (
            [cell_text(value) for value in findings[column].tolist()]
            if column in findings.columns
            else [""] * len(findings)
        )
        for column in FINDING_COLUMNS
    }
    return pd.DataFrame(data, columns=list(FINDING_COLUMNS), dtype=object)


def counts_by_kind(findings: pd.DataFrame) -> dict[str, int]:
    """Rows per kind, most frequent first, ties by name."""
    if len(findings) == 0:
        return {}
    counts = findings["kind"].value_counts()
    pairs = sorted(((str(k), int(n)) for k, n in counts.items()), key=lambda p: (-p[1], p[0]))
    return dict(pairs)


def counts_by_severity(findings: pd.DataFrame) -> dict[str, int]:
    if len(findings) == 0:
        return {}
    counts = findings["severity"].value_counts()
    return {str(k): int(n) for k, n in sorted(counts.items(), key=lambda p: str(p[0]))}


def counts_by_kind_and_severity(findings: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(kind, severity, rows), most frequent first; a kind with mixed severities has a row each."""
    if len(findings) == 0:
        return []
    grouped = findings.groupby(["kind", "severity"], sort=False).size()
    pairs = zip(grouped.index, grouped, strict=True)
    rows = [(str(key[0]), str(key[1]), int(n)) for key, n in pairs]
    return sorted(rows, key=lambda row: (-row[2], row[0], row[1]))


def write_csv(table: pd.DataFrame, handle: IO[str]) -> None:
    """UTF-8 CSV with a header, no index, absent values empty."""
    table.to_csv(handle, index=False, na_rep="", lineterminator="\n")


def to_arrow(table: pd.DataFrame, *, all_strings: bool = False) -> pa.Table:
    """An Arrow table without the pandas index; `all_strings` types every column as string.

    Done before anything is written, so a table Arrow cannot type fails early.
    """
    if all_strings:
        schema = pa.schema([(str(column), pa.string()) for column in table.columns])
        return pa.Table.from_pandas(table, schema=schema, preserve_index=False)
    return pa.Table.from_pandas(table, preserve_index=False)


def write_parquet(table: pa.Table, handle: IO[bytes]) -> None:
    pq.write_table(table, handle)
