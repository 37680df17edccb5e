"""Changes since the last completed run of the same job and mode, for the run folder.

The previous run is found through the state database's run records; its findings are
read back from its own report folder (`findings.parquet`, else `findings.csv`). A
comparison that cannot be made (a first run, a folder removed since) is no reason to
fail a run: the run says why there is no comparison instead.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reconcile.logs import get_logger
from reconcile.rules.changes import diff_findings
from reconcile.state.store import RunRecord, RunStatus, StateStore
from reports.tables import FORMULA_TRIGGERS, contract_findings

__all__ = [
    "COMPLETED_STATUSES",
    "FindingsUnavailable",
    "RunChanges",
    "changes_between",
    "changes_since_last_run",
    "completed_runs",
    "previous_completed_run",
    "read_run_findings",
]

log = get_logger(__name__)

# A run whose findings are whole: `partial` is a write job some of whose actions failed.
COMPLETED_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.PARTIAL})
_PAGE = 50


class FindingsUnavailable(Exception):
    """A run's findings cannot be read back; the message says why, in one line."""


@dataclass(frozen=True)
class RunChanges:
    """New and resolved findings since `since_run`; without one, `reason` says why not."""

    since_run: str | None
    since_started_at: datetime | None
    new: pd.DataFrame | None
    resolved: pd.DataFrame | None
    still_open: int | None
    reason: str | None = None

    @property
    def compared(self) -> bool:
        return self.since_run is not None

    def counts(self) -> dict[str, Any]:
        """What summary.json holds under `changes`."""
        return {
            "since_run": self.since_run,
            "new": None if self.new is None else len(self.new),
            "resolved": None if self.resolved is None else len(self.resolved),
            "still_open": self.still_open,
            "reason": self.reason,
        }


def completed_runs(state: StateStore, job: str, mode: str | None = None) -> list[RunRecord]:
    """The completed runs of `job` (of `mode` when given), newest first."""
    limit = _PAGE
    while True:
        records = state.list_runs(job, limit=limit)
        found = [
            r
            for r in records
            if r.status in COMPLETED_STATUSES and (mode is None or r.mode == mode)
        ]
        if found or len(records) < limit:
            return found
        limit *= 4  # a long streak of failed runs: look further back


def previous_completed_run(
    state: StateStore, job: str, mode: str | None, *, before: RunRecord | str
) -> RunRecord | None:
    """The last completed run of `job` and `mode` started before `before` (a run or its id)."""
    current = state.get_run(before) if isinstance(before, str) else before
    limit = _PAGE
    while True:
        records = state.list_runs(job, limit=limit)
        for record in records:
            if record.run_id == (before if isinstance(before, str) else before.run_id):
                continue
            if current is not None and record.started_at > current.started_at:
                continue
            if record.status in COMPLETED_STATUSES and (mode is None or record.mode == mode):
                return record
        if len(records) < limit:
            return None
        limit *= 4


def _undo_csv_neutralising(value: str) -> str:
    # write_csv prefixes a formula-like cell with `'`; Parquet, when there, has it raw.
    if value.startswith("'") and value[1:].startswith(FORMULA_TRIGGERS):
        return value[1:]
    return value


def read_run_findings(record: RunRecord) -> pd.DataFrame:
    """The findings of a recorded run, from its report folder, in the contract's form."""
    if not record.report_dir:
        raise FindingsUnavailable(f"run {record.run_id} has no report folder recorded")
    folder = Path(record.report_dir)
    parquet, csv = folder / "findings.parquet", folder / "findings.csv"
    try:
        if parquet.is_file():
            return contract_findings(pq.read_table(parquet).to_pandas())
        if csv.is_file():
            text = csv.read_text(encoding="utf-8")
            table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
            return contract_findings(table.map(_undo_csv_neutralising))
    except (OSError, pa.ArrowException, ValueError, pd.errors.ParserError) as exc:
        raise FindingsUnavailable(
            f"the findings of run {record.run_id} in {folder} cannot be read ({exc})"
        ) from exc
    raise FindingsUnavailable(
        f"the findings of run {record.run_id} are no longer in {folder} "
        "(removed, or the report folder was moved)"
    )


def changes_between(previous: RunRecord, current_findings: pd.DataFrame) -> RunChanges:
    """The changes from `previous`'s findings to `current_findings`; FindingsUnavailable
    when `previous`'s findings cannot be read."""
    diff = diff_findings(read_run_findings(previous), contract_findings(current_findings))
    return RunChanges(
        since_run=previous.run_id,
        since_started_at=previous.started_at,
        new=diff.new,
        resolved=diff.resolved,
        still_open=diff.still_open,
    )


def _not_compared(reason: str) -> RunChanges:
    return RunChanges(None, None, None, None, None, reason)


def changes_since_last_run(
    state: StateStore, job: str, mode: str | None, run_id: str, findings: pd.DataFrame
) -> RunChanges:
    """The run `run_id`'s `findings` against the last completed run of `job` in `mode`."""
    previous = previous_completed_run(state, job, mode, before=run_id)
    if previous is None:
        return _not_compared(f"first completed {job} run in {mode or 'this'} mode")
    try:
        return changes_between(previous, findings)
    except FindingsUnavailable as exc:
        log.warning("no comparison with the last run", previous_run=previous.run_id)
        return _not_compared(str(exc))
