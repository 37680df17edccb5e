"""The run lifecycle around a job: lock, run record, gateway, reports, exit code."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import structlog

from jobs.base import Job, JobContext
from jobs.state import StateStore
from reconcile.errors import EXIT_FINDINGS, EXIT_OK, ReconcileError
from reconcile.findings import Severity
from reconcile.gateway import StripeGateway
from reconcile.logs import get_logger
from reconcile.settings import Settings
from reconcile.userdb import UserDB
from reports.writer import new_run_id, write_run_reports

__all__ = ["LEASE_SECONDS", "RunOutcome", "execute_job", "severity_at_least"]

log = get_logger(__name__)

LEASE_SECONDS = 300
_SEVERITY_ORDER = [Severity.INFO, Severity.WARNING, Severity.ERROR]


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    run_dir: Path
    summary: dict[str, Any]
    findings: pd.DataFrame
    exit_code: int


def severity_at_least(severity: str, threshold: str) -> bool:
    return _SEVERITY_ORDER.index(Severity(severity)) >= _SEVERITY_ORDER.index(Severity(threshold))


def _owner(run_id: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{run_id}"


def execute_job(
    job: Job,
    settings: Settings,
    *,
    out_dir: Path | None = None,
    options: Mapping[str, Any] | None = None,
    fail_on: str | None = None,
    gateway_factory: Callable[[Settings], StripeGateway] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RunOutcome:
    """Run one job to completion; raises ReconcileError subclasses with their exit codes."""
    started_at = now()
    run_id = new_run_id(started_at)
    out = out_dir or settings.reports.out
    gateway = (gateway_factory or build_gateway)(settings)
    state = StateStore(settings.state.url)
    structlog.contextvars.bind_contextvars(run_id=run_id, job=job.name)
    try:
        with state.lease(job.name, _owner(run_id), LEASE_SECONDS):
            state.start_run(run_id, job.name, started_at=started_at, mode=gateway.mode.value)
            log.info("run started", mode=gateway.mode.value, key=gateway.masked_key)
            clock_start = time.monotonic()
            userdb = UserDB(settings.userdb)
            try:
                ctx = JobContext(
                    settings=settings,
                    gateway=gateway,
                    userdb=userdb,
                    run_id=run_id,
                    started_at=started_at,
                    out_dir=out,
                    dry_run=not (options or {}).get("apply", False),
                    options=options or {},
                )
                result = job.run(ctx)
                finished_at = now()
                summary = _summary(
                    job, run_id, gateway, started_at, finished_at, clock_start, result.facts
                )
                summary["counts_by_kind"] = _counts(result.findings)
                run_dir = write_run_reports(
                    out,
                    job.name,
                    run_id,
                    result.findings,
                    summary,
                    formats=settings.reports.formats,
                    extra_tables=result.extra_tables,
                    file_mode=settings.reports.file_mode,
                )
            except BaseException as exc:
                reason = exc.message if isinstance(exc, ReconcileError) else type(exc).__name__
                state.finish_run(
                    run_id,
                    "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                    finished_at=now(),
                    requests=dict(gateway.stats.by_endpoint),
                    error=reason,
                )
                raise
            finally:
                userdb.close()
            state.finish_run(
                run_id,
                "succeeded",
                finished_at=finished_at,
                counts=summary["counts_by_kind"],
                requests=summary["requests_by_endpoint"],
                report_dir=str(run_dir),
            )
            log.info("run finished", findings=len(result.findings), report_dir=str(run_dir))
    finally:
        structlog.contextvars.unbind_contextvars("run_id", "job")
        state.close()
    matched = fail_on is not None and any(
        severity_at_least(s, fail_on) for s in result.findings["severity"]
    )
    return RunOutcome(
        run_id, run_dir, summary, result.findings, EXIT_FINDINGS if matched else EXIT_OK
    )


def build_gateway(settings: Settings) -> StripeGateway:
    return StripeGateway(
        settings.require_key(),
        api_base=settings.stripe.api_base,
        max_requests_per_second=settings.stripe.max_requests_per_second,
    )


def _counts(findings: Any) -> dict[str, int]:
    counts = findings["kind"].value_counts().to_dict() if len(findings) else {}
    return {str(kind): int(counts[kind]) for kind in sorted(counts)}


def _summary(
    job: Job,
    run_id: str,
    gateway: StripeGateway,
    started_at: datetime,
    finished_at: datetime,
    clock_start: float,
    facts: Mapping[str, Any],
) -> dict[str, Any]:
    stats = gateway.stats
    return {
        "job": job.name,
        "run_id": run_id,
        "status": "succeeded",
        "mode": gateway.mode.value,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "duration_seconds": round(time.monotonic() - clock_start, 3),
        **facts,
        "requests_total": sum(stats.by_endpoint.values()),
        "requests_by_endpoint": dict(sorted(stats.by_endpoint.items())),
        "retries": stats.retries,
        "rate_limited": stats.rate_limited,
    }
