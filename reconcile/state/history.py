"""Run history: what `stripe-reconcile runs` shows, and the upkeep that keeps it true.

- `record_run_stats`: the request facts a run record has no column for (429s, retries,
  errors, duration), in `stripe_reconcile_run_stats`, written for every run however it
  ends; and its reads (GET requests), kept for the read budget (`reconcile.state.read_budget`).
- `reap_dead_holder`: a run killed with SIGKILL (or a lost node) leaves its record
  `running` and its lease held. When the lease is taken over, the record becomes
  `interrupted`; a holder on this host whose process is gone is taken over at once
  rather than when its lease expires (`[resume] lease_seconds`, 45 s by default).
- `format_runs` / `format_run`: the text of `runs` and `runs show ID`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from reconcile.logs import get_logger
from reconcile.state.read_budget import record_reads
from reconcile.state.store import RunRecord, RunStatus, StateStore
from reconcile.state.tables import runs_table, stats_table
from reconcile.stripe_api.endpoints import reads_of
from reconcile.stripe_api.http import RequestStats

__all__ = [
    "RunStats",
    "format_run",
    "format_runs",
    "load_stats",
    "parse_owner",
    "reap_dead_holder",
    "record_run_stats",
    "resumed_from",
    "stats_table",
]

log = get_logger(__name__)


@dataclass(frozen=True)
class RunStats:
    rate_limited: int
    retries: int
    errors: int
    duration_seconds: float | None


def record_run_stats(
    state: StateStore,
    run_id: str,
    stats: RequestStats,
    duration_seconds: float | None,
    *,
    customers: int | None = None,
) -> None:
    """Keep a run's 429s, retries, errors and reads (with `customers`, the count it saw);
    never raises (the run's own outcome matters more)."""
    try:
        record = state.get_run(run_id)
        if record is None:  # the lease was never ours: no run to describe
            return
        record_reads(
            state,
            run_id,
            job=record.job,
            mode=record.mode or "",
            reads=reads_of(stats.snapshot()["requests"]),
            customers=customers,
            at=record.finished_at or datetime.now(UTC),
        )
        with state.engine.begin() as conn:
            conn.execute(stats_table.delete().where(stats_table.c.run_id == run_id))
            conn.execute(
                stats_table.insert().values(
                    run_id=run_id,
                    rate_limited=stats.rate_limited,
                    retries=stats.retries,
                    errors=stats.errors,
                    duration_seconds=duration_seconds,
                )
            )
    except sa.exc.SQLAlchemyError as exc:
        log.warning("could not record the run's request stats", error=type(exc).__name__)


def load_stats(state: StateStore, run_ids: Sequence[str]) -> dict[str, RunStats]:
    if not run_ids:
        return {}
    with state.engine.connect() as conn:
        rows = conn.execute(stats_table.select().where(stats_table.c.run_id.in_(run_ids))).all()
    return {
        row.run_id: RunStats(row.rate_limited, row.retries, row.errors, row.duration_seconds)
        for row in rows
    }


def parse_owner(owner: str) -> tuple[str, int, str] | None:
    """`host:pid:run_id` (the runner's lease owner) as its parts; None if it is not one."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_holder(
    state: StateStore,
    job: str,
    *,
    now: datetime | None = None,
    host: str | None = None,
    pid_alive: Callable[[int], bool] = _pid_alive,
) -> str | None:
    """Before taking the lease on `job`: if its holder is dead, mark its run interrupted.

    A holder is dead when its lease expired, or when it ran on this host and its
    process is gone (its lease is then expired here, so the caller takes it at once).
    Returns the run id marked interrupted, if any.
    """
    holder = state.lock_holder(job)
    if holder is None:
        return None
    at = now or datetime.now(UTC)
    owner = parse_owner(holder.owner)
    expired = holder.expires_at <= at
    dead_here = (
        owner is not None and owner[0] == (host or socket.gethostname()) and not pid_alive(owner[1])
    )
    if not (expired or dead_here):
        return None
    if dead_here and not expired:
        state.expire_lock(job, holder.owner, at)
    if owner is None:
        return None
    run_id = owner[2]
    record = state.get_run(run_id)
    if record is None or record.status is not RunStatus.RUNNING:
        return None
    why = "its process is gone" if dead_here else "its lease expired"
    state.finish_run(
        run_id,
        RunStatus.INTERRUPTED,
        finished_at=at,
        error=f"{why}; the lease was taken over (resume it with --resume)",
    )
    log.warning("marked a dead run interrupted", dead_run=run_id, reason=why)
    return run_id


# Text --------------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def _duration(record: RunRecord, stats: RunStats | None) -> str:
    if stats is not None and stats.duration_seconds is not None:
        return f"{stats.duration_seconds:.1f}s"
    if record.finished_at is not None:
        return f"{(record.finished_at - record.started_at).total_seconds():.1f}s"
    return "-"


def format_runs(records: Sequence[RunRecord], stats: Mapping[str, RunStats]) -> str:
    """One line per run, newest first: id, job, status, start, duration, findings, requests."""
    if not records:
        return "no runs recorded"
    header = (
        "RUN ID",
        "JOB",
        "STATUS",
        "STARTED (UTC)",
        "DURATION",
        "FINDINGS",
        "REQUESTS",
        "429s",
    )
    rows = [header]
    for r in records:
        s = stats.get(r.run_id)
        rows.append(
            (
                r.run_id,
                r.job,
                r.status.value,
                _when(r.started_at),
                _duration(r, s),
                str(sum(r.counts.values())) if r.status is not RunStatus.RUNNING else "-",
                str(sum(r.requests.values())),
                "-" if s is None else str(s.rate_limited),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _block(title: str, values: Mapping[str, int]) -> list[str]:
    if not values:
        return [f"{title}: none"]
    width = max(len(k) for k in values)
    return [f"{title}:", *(f"  {k:<{width}}  {v:>7}" for k, v in values.items())]


def format_run(record: RunRecord, stats: RunStats | None, resumed_from: str | None = None) -> str:
    """Everything known about one run, for `runs show ID`."""
    lines = [
        f"run        {record.run_id}",
        f"job        {record.job}",
        f"status     {record.status.value}",
        f"mode       {record.mode or '-'}",
        f"started    {_when(record.started_at)} UTC",
        f"finished   {_when(record.finished_at)}{' UTC' if record.finished_at else ''}",
        f"duration   {_duration(record, stats)}",
    ]
    if resumed_from:
        lines.append(f"resumed    from {resumed_from}")
    lines.append(f"report     {record.report_dir or '-'}")
    lines.append(f"error      {record.error or '-'}")
    lines += _block("findings by kind", record.counts)
    lines += _block("requests by endpoint", dict(sorted(record.requests.items())))
    if stats is None:
        lines.append("429s       -   retries -   errors -")
    else:
        lines.append(
            f"429s       {stats.rate_limited}   retries {stats.retries}   errors {stats.errors}"
        )
    return "\n".join(lines)


def resumed_from(state: StateStore, run_id: str) -> str | None:
    """The run whose listing `run_id` continued, if it resumed one."""
    with state.engine.connect() as conn:
        found = conn.execute(
            sa.select(runs_table.c.resumed_from).where(runs_table.c.run_id == run_id)
        ).scalar()
    return None if found is None else str(found)
