"""The audit log: one row per write a job attempted, in the state database and audit.csv.

Rows hold ids, parameters and outcomes. Jobs that delete personal data (gdpr-delete)
put ids only in `before` and `after`, so the log itself never keeps what was deleted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reconcile.rules.findings import STRING_DTYPE
from reconcile.state.schema import ensure_schema
from reconcile.state.store import utc_now
from reconcile.state.tables import audit_table, metadata

__all__ = [
    "AUDIT_COLUMNS",
    "AuditEntry",
    "AuditLog",
    "Outcome",
    "audit_frame",
    "audit_metadata",
    "audit_table",
]

AUDIT_COLUMNS: tuple[str, ...] = (
    "time",
    "run_id",
    "job",
    "action",
    "customer_id",
    "user_id",
    "before",
    "after",
    "idempotency_key",
    "stripe_request_id",
    "outcome",
    "error",
)


class Outcome:
    # Written before the write is sent, and replaced by the final outcome after it: a run
    # killed in between leaves this row, so no write ever goes unaudited.
    STARTED = "started"
    APPLIED = "applied"  # the write happened (a replayed answer only once read back)
    UNCHANGED = "unchanged"  # nothing to write any more (e.g. someone linked the user meanwhile)
    # Not written: what the action was planned on changed since the listing (the customer
    # deleted, a default chosen meanwhile); `error` holds the reason.
    SKIPPED = "skipped"
    FAILED = "failed"


# The state database's one MetaData, under the name this module always gave it.
audit_metadata = metadata


@dataclass(frozen=True)
class AuditEntry:
    time: datetime
    run_id: str
    job: str
    action: str
    customer_id: str
    user_id: str
    before: str  # JSON
    after: str  # JSON
    idempotency_key: str
    stripe_request_id: str
    outcome: str
    error: str


def _json(value: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(value or {}), sort_keys=True, ensure_ascii=False, default=str)


def _entry(
    *,
    run_id: str,
    job: str,
    action: str,
    outcome: str,
    customer_id: str | None,
    user_id: str | None,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    idempotency_key: str | None,
    stripe_request_id: str | None,
    error: str | None,
    time: datetime | None = None,
) -> AuditEntry:
    return AuditEntry(
        time=time or utc_now(),
        run_id=run_id,
        job=job,
        action=action,
        customer_id=customer_id or "",
        user_id=user_id or "",
        before=_json(before),
        after=_json(after),
        idempotency_key=idempotency_key or "",
        stripe_request_id=stripe_request_id or "",
        outcome=outcome,
        error=(error or "")[:2000],
    )


def _row(entry: AuditEntry) -> dict[str, Any]:
    return {name: (value if value != "" else None) for name, value in asdict(entry).items()}


class AuditLog:
    """Appends entries to `stripe_reconcile_audit`, each in its own short transaction.

    Entries are also kept in memory for the run's `audit.csv`.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.engine = engine
        self._clock = clock
        ensure_schema(engine)
        self.recorded: list[AuditEntry] = []

    def record(
        self,
        *,
        run_id: str,
        job: str,
        action: str,
        outcome: str,
        customer_id: str | None = None,
        user_id: str | None = None,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        stripe_request_id: str | None = None,
        error: str | None = None,
    ) -> AuditEntry:
        """Append one finished entry (for writes that need no `started` row first)."""
        # The keyword parameters are exactly the entry's fields.
        fields = {k: v for k, v in locals().items() if k != "self"}
        entry = _entry(**fields, time=self._clock())
        with self.engine.begin() as conn:
            conn.execute(audit_table.insert().values(**_row(entry)))
        self.recorded.append(entry)
        return entry

    def begin(
        self,
        *,
        run_id: str,
        job: str,
        action: str,
        customer_id: str | None,
        user_id: str | None,
        before: Mapping[str, Any] | None,
        idempotency_key: str | None,
    ) -> int:
        """Record an action about to be sent (outcome `started`); returns the row's id."""
        row = {
            "time": self._clock(),
            "run_id": run_id,
            "job": job,
            "action": action,
            "customer_id": customer_id or None,
            "user_id": user_id or None,
            "before": _json(before) or None,
            "idempotency_key": idempotency_key or None,
            "outcome": Outcome.STARTED,
        }
        with self.engine.begin() as conn:
            inserted = conn.execute(audit_table.insert().values(**row))
            key = inserted.inserted_primary_key
        assert key is not None
        return int(key[0])

    def finish(
        self,
        row_id: int,
        *,
        run_id: str,
        job: str,
        action: str,
        outcome: str,
        customer_id: str | None = None,
        user_id: str | None = None,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        stripe_request_id: str | None = None,
        error: str | None = None,
    ) -> AuditEntry:
        """Replace a `started` row with what happened."""
        fields = {k: v for k, v in locals().items() if k not in ("self", "row_id")}
        entry = _entry(**fields, time=self._clock())
        with self.engine.begin() as conn:
            conn.execute(
                audit_table.update().where(audit_table.c.id == row_id).values(**_row(entry))
            )
        self.recorded.append(entry)
        return entry

    def entries(self, *, run_id: str | None = None, job: str | None = None) -> list[AuditEntry]:
        """Stored entries, oldest first, optionally of one run or one job."""
        query = sa.select(audit_table).order_by(audit_table.c.id)
        if run_id is not None:
            query = query.where(audit_table.c.run_id == run_id)
        if job is not None:
            query = query.where(audit_table.c.job == job)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        entries = []
        for row in rows:
            values: dict[str, Any] = {
                name: row[name] if row[name] is not None else "" for name in AUDIT_COLUMNS
            }
            entries.append(AuditEntry(**values))
        return entries


def audit_frame(entries: Iterable[AuditEntry]) -> pd.DataFrame:
    """`audit.csv`: one row per entry, every column a string, "" for absent."""
    records = [
        {
            **asdict(entry),
            "time": entry.time.isoformat() if isinstance(entry.time, datetime) else entry.time,
        }
        for entry in entries
    ]
    frame = pd.DataFrame.from_records(records, columns=list(AUDIT_COLUMNS))
    return frame.astype(STRING_DTYPE).fillna("")
