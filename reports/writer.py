"""The run folder: `<out>/<job>/<run id>/` with findings, tables and the summaries.

Everything a file will hold is prepared in memory first (contract columns, Arrow
tables, JSON, HTML), so a bad table fails before the disk is touched; then the
folder is written under a hidden name and renamed into place (see reconcile.atomic).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from reconcile.atomic import StagedFolder, staged_folder, staging_name, sweep_stale_staging
from reconcile.errors import ConfigError
from reconcile.logs import get_logger
from reports.changes import RunChanges
from reports.errors import ReportWriteError
from reports.html import HtmlOptions, load_template, render_summary_html
from reports.run_id import new_run_id
from reports.tables import (
    contract_findings,
    counts_by_kind,
    counts_by_severity,
    safe_file_stem,
    to_arrow,
    write_csv,
    write_parquet,
)

__all__ = [
    "REPORT_FORMATS",
    "ReportWriteError",
    "load_report_writing",
    "new_run_id",
    "write_run_reports",
]

log = get_logger(__name__)

REPORT_FORMATS = ("csv", "parquet")
_RESERVED_TABLE_NAMES = frozenset({"findings", "summary", "new", "resolved"})


@dataclass(frozen=True)
class _Table:
    """One table to write: `name` is the file stem; `arrow` only when Parquet is asked for."""

    name: str
    frame: pd.DataFrame
    arrow: pa.Table | None


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    # numpy scalars (counts from pandas) know how to become Python numbers.
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"summary value of type {type(value).__name__} cannot go into summary.json")


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(formats))
    unknown = [f for f in chosen if f not in REPORT_FORMATS]
    if unknown or not chosen:
        raise ConfigError(
            f"[reports] formats = {list(formats)!r} is not valid: "
            f"choose one or more of {', '.join(REPORT_FORMATS)}"
        )
    return chosen


def _prepare_tables(
    findings: pd.DataFrame, extra_tables: Mapping[str, pd.DataFrame], formats: tuple[str, ...]
) -> list[_Table]:
    parquet = "parquet" in formats
    tables = [
        _Table("findings", findings, to_arrow(findings, all_strings=True) if parquet else None)
    ]
    for name, frame in extra_tables.items():
        safe_file_stem(name, "extra table name")
        if name in _RESERVED_TABLE_NAMES or name.startswith("findings-"):
            raise ValueError(f"extra table name {name!r} is taken by the findings or summary")
        try:
            arrow = to_arrow(frame) if parquet else None
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise ValueError(
                f"extra table {name!r} cannot be written as Parquet ({exc}): "
                "give each column a single type"
            ) from exc
        tables.append(_Table(name, frame, arrow))
    return tables


def _per_kind(findings: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return [
        (safe_file_stem(kind, "finding kind"), findings[findings["kind"] == kind])
        for kind in counts_by_kind(findings)
    ]


def _write_all(
    folder: StagedFolder,
    tables: list[_Table],
    per_kind: list[tuple[str, pd.DataFrame]],
    formats: tuple[str, ...],
    summary_json: str,
    summary_html: str,
    changes: RunChanges | None,
) -> None:
    for table in tables:
        if "csv" in formats:
            with folder.open_text(f"{table.name}.csv") as handle:
                write_csv(table.frame, handle)
        if table.arrow is not None:
            with folder.open_binary(f"{table.name}.parquet") as handle:
                write_parquet(table.arrow, handle)
    # One CSV per kind whatever the formats: these are for people, who open CSVs.
    for kind, rows in per_kind:
        with folder.open_text(f"findings-{kind}.csv") as handle:
            write_csv(rows, handle)
    # Changes since the last run, also for people: in the findings' columns, always CSV.
    if changes is not None and changes.new is not None and changes.resolved is not None:
        for name, rows in (("new", changes.new), ("resolved", changes.resolved)):
            with folder.open_text(f"{name}.csv") as handle:
                write_csv(contract_findings(rows), handle)
    folder.write_text("summary.json", summary_json)
    folder.write_text("summary.html", summary_html)


def _file_names(
    tables: list[_Table],
    per_kind: list[tuple[str, pd.DataFrame]],
    formats: tuple[str, ...],
    changes: RunChanges | None,
) -> set[str]:
    """The names of the files `_write_all` writes beside summary.html (what it may link)."""
    names = {f"findings-{kind}.csv" for kind, _ in per_kind}
    for table in tables:
        if "csv" in formats:
            names.add(f"{table.name}.csv")
        if table.arrow is not None:
            names.add(f"{table.name}.parquet")
    if changes is not None and changes.compared:
        names |= {"new.csv", "resolved.csv"}
    return names


def _cause_and_fix(exc: OSError) -> tuple[str, str]:
    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
        return "it already exists", "give each run a new run id (new_run_id)"
    if exc.errno == errno.ENOSPC:
        return "the disk is full", "free space on the output folder's disk"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied", "make the output folder (--out, [reports] out) writable"
    return (
        exc.strerror or type(exc).__name__,
        "check the output folder (--out, [reports] out)",
    )


def load_report_writing() -> None:
    """Import and compile now what writing a run's reports and metrics needs, so that a
    run can do it while it waits on Stripe rather than after its last answer."""
    import reports.metrics  # noqa: F401

    load_template()


def write_run_reports(
    out_dir: Path,
    job: str,
    run_id: str,
    findings: pd.DataFrame,
    summary: Mapping[str, Any],
    *,
    formats: Sequence[str] = REPORT_FORMATS,
    extra_tables: Mapping[str, pd.DataFrame] | None = None,
    file_mode: int = 0o600,
    changes: RunChanges | None = None,
    html: HtmlOptions | None = None,
) -> Path:
    """Write `<out_dir>/<job>/<run_id>/` atomically and return its path.

    The folder holds `findings.csv` / `findings.parquet` (per `formats`, exactly the
    contract's columns), `findings-<kind>.csv` for each kind present, each extra table
    as `<name>.csv` / `<name>.parquet`, `summary.json` (the given summary plus
    `job`, `run_id`, `counts_by_kind` and `counts_by_severity` where absent, and
    `changes` from `changes`) and `summary.html`, shown as `html` says. With `changes`
    compared with an earlier run, `new.csv` and `resolved.csv` hold the findings new in
    this run and those of the earlier run gone from it. Files get `file_mode` (reports
    may hold personal data).

    Raises ConfigError for unknown formats, ValueError for tables that break the
    contract (before anything is written) and ReportWriteError when the disk refuses;
    in every case no folder, final or temporary, is left behind.
    """
    safe_file_stem(job, "job name")
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise ValueError(f"run id {run_id!r} cannot name a folder: use new_run_id()")
    chosen = _check_formats(formats)
    contract = contract_findings(findings)
    tables = _prepare_tables(contract, extra_tables or {}, chosen)
    per_kind = _per_kind(contract)

    full_summary: dict[str, Any] = {**summary, "job": job, "run_id": run_id}
    full_summary.setdefault("counts_by_kind", counts_by_kind(contract))
    full_summary.setdefault("counts_by_severity", counts_by_severity(contract))
    if changes is not None:
        full_summary["changes"] = changes.counts()
    summary_json = json.dumps(full_summary, indent=2, default=_json_default) + "\n"
    summary_html = render_summary_html(
        full_summary,
        contract,
        changes=changes,
        plan=(extra_tables or {}).get("plan"),
        links=_file_names(tables, per_kind, chosen, changes),
        options=html,
    )

    final = Path(out_dir) / job / run_id
    try:
        # Staging folders of killed runs hold personal data: clear them out first.
        swept = sweep_stale_staging(final.parent)
        if swept:
            log.warning("removed staging folders left by killed runs", count=len(swept))
        with staged_folder(final, staging_name(run_id, os.getpid()), file_mode) as folder:
            _write_all(folder, tables, per_kind, chosen, summary_json, summary_html, changes)
    except OSError as exc:
        cause, fix = _cause_and_fix(exc)
        raise ReportWriteError(
            f"could not write the report folder {final}: {cause} ({exc}); {fix}"
        ) from exc
    return final
