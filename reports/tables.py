"""Findings and other tables turned into what the report files hold.

The findings contract: exactly FINDING_COLUMNS, in order, every value a string,
absent values empty (never "None" or "nan"), in CSV and Parquet alike.

Every CSV the tool writes goes through `write_csv`, which neutralises formula cells the
OWASP way: names and metadata are set by whoever signs up, and the CSVs are opened in
spreadsheets, where `=HYPERLINK(...)` or `@SUM(...)` would run. Parquet keeps raw values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reconcile.rules.findings import FINDING_COLUMNS

__all__ = [
    "FINDING_COLUMNS",
    "FORMULA_TRIGGERS",
    "cell_text",
    "contract_findings",
    "counts_by_kind",
    "counts_by_kind_and_severity",
    "counts_by_severity",
    "csv_safe_cell",
    "csv_safe_table",
    "safe_file_stem",
    "to_arrow",
    "write_csv",
    "write_parquet",
]


_SAFE_STEM = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
# What a spreadsheet reads as the start of a formula (OWASP's "CSV Injection" list).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# Rows formatted at a time: a table of millions is never held twice as text.
_CSV_CHUNK_ROWS = 50_000


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
                "build them with every column of reconcile.rules.findings.FINDING_COLUMNS"
            )
    data = {
        column: (
            # A str is its own cell text (the rules' findings are all str): no call for it.
            [v if type(v) is str else cell_text(v) for v in findings[column].tolist()]
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


def csv_safe_cell(value: Any) -> Any:
    """A text starting like a formula, with a leading `'` (shown as text); anything else as is."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def _is_text_column(values: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype)


def csv_safe_table(table: pd.DataFrame, *, number_columns: Collection[str] = ()) -> pd.DataFrame:
    """`table` with every text cell passed through `csv_safe_cell`; numbers stay numbers.

    Numeric columns are left alone (a `days_left` of -3 is a number, not a formula), as are
    `number_columns`: columns of numbers held as text, as in a CSV read back as strings.
    """
    arrays: dict[int, Any] = {}
    for position, (column, values) in enumerate(table.items()):
        if column in number_columns or not _is_text_column(values):
            arrays[position] = values.array
            continue
        cells = values.to_numpy(dtype=object, copy=True)
        # csv_safe_cell on the few cells it changes: most cells are plain text.
        for index, cell in enumerate(cells):
            if isinstance(cell, str) and cell.startswith(FORMULA_TRIGGERS):
                cells[index] = csv_safe_cell(cell)
        arrays[position] = cells
    # Built whole, by position (column names may repeat), rather than column by column.
    safe = pd.DataFrame(arrays, index=table.index)
    safe.columns = table.columns
    return safe


def _lf_rows(text: str) -> str:
    """CSV text written with CRLF row ends, with LF row ends: a CRLF outside quotes (the
    even pieces between `"`s, `""` escapes included) can only end a row."""
    pieces = text.split('"')
    pieces[::2] = [piece.replace("\r\n", "\n") for piece in pieces[::2]]
    return '"'.join(pieces)


def write_csv(
    table: pd.DataFrame, handle: IO[str], *, number_columns: Collection[str] = ()
) -> None:
    """UTF-8 CSV with a header, no index, LF row ends, absent values empty, formula cells
    neutralised (`csv_safe_table`): the one way this tool writes a CSV.

    Python's csv writer quotes a cell holding a character of its row end only: given LF,
    a cell with a bare CR goes out unquoted, and spreadsheets break the row there, so
    the text after it starts a row of its own, formula and all. Written with CRLF, every
    cell holding either is quoted; the row ends go back to LF afterwards.
    """
    starts = range(0, len(table), _CSV_CHUNK_ROWS) if len(table) else range(1)
    for start in starts:
        chunk = csv_safe_table(
            table.iloc[start : start + _CSV_CHUNK_ROWS], number_columns=number_columns
        )
        text = chunk.to_csv(index=False, header=start == 0, na_rep="", lineterminator="\r\n")
        handle.write(_lf_rows(text))


def to_arrow(table: pd.DataFrame, *, all_strings: bool = False) -> pa.Table:
    """An Arrow table without the pandas index; `all_strings` types every column as string.

    Done before anything is written, so a table Arrow cannot type fails early.
    """
    # One thread: report tables are mostly Python strings, whose conversion holds the
    # interpreter anyway, so a pool of threads adds only its own start-up.
    if all_strings:
        schema = pa.schema([(str(column), pa.string()) for column in table.columns])
        return pa.Table.from_pandas(table, schema=schema, preserve_index=False, nthreads=1)
    return pa.Table.from_pandas(table, preserve_index=False, nthreads=1)


def write_parquet(table: pa.Table, handle: IO[bytes]) -> None:
    pq.write_table(table, handle)
