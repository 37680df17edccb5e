"""The run lifecycle around a job: lock, run record, gateway, reports, delivery, exit code.

A job only computes; this module owns everything around it, so every job gets the
same guarantees: two runs of one job never overlap, a run is recorded whatever
happens to it, its report folder appears whole or not at all, and the exit code
says what cron or Kubernetes should do about it.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from jobs.base import STOP_OPTION, Job, JobContext, JobResult, resume_requested
from reconcile.errors import (
    EXIT_ACTIONS_FAILED,
    EXIT_FINDINGS,
    EXIT_OK,
    DeliveryError,
    LockHeldError,
    ReconcileError,
)
from reconcile.listing.checkpoints import RunInterrupted
from reconcile.listing.resume import forget_listing
from reconcile.logs import bind_log_context, get_logger, unbind_log_context
from reconcile.settings import Settings
from reconcile.state.history import reap_dead_holder, record_run_stats
from reconcile.state.read_budget import check_read_budget
from reconcile.state.store import Lease, LockRecord, StateStore, lock_held_message
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter_registry import shared_limiter
from reconcile.stripe_api.retry import RetryPolicy
from reports.run_id import new_run_id

# pandas, the users database and the reports come in after the job started: a run's first
# Stripe request does not wait for them (tests/startup).
if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "AfterRun",
    "RunOutcome",
    "build_gateway",
    "execute_job",
    "retry_policy",
    "severity_at_least",
]

log = get_logger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    run_dir: Path
    summary: dict[str, Any]
    findings: pd.DataFrame
    result: JobResult
    exit_code: int


# Called after the report folder is in place (email, metrics). Raising DeliveryError
# keeps the reports and the succeeded run record, and turns the exit code into 7.
AfterRun = Callable[[RunOutcome, Settings], None]


def severity_at_least(severity: str, threshold: str) -> bool:
    # reconcile.rules.findings brings pandas: imported once findings exist to be judged.
    from reconcile.rules.findings import Severity

    order = [Severity.INFO, Severity.WARNING, Severity.ERROR]
    return order.index(Severity(severity)) >= order.index(Severity(threshold))


def _owner(run_id: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{run_id}"


def build_gateway(settings: Settings) -> StripeGateway:
    return StripeGateway(
        settings.require_key(),
        api_base=settings.stripe.api_base,
        max_requests_per_second=settings.stripe.max_requests_per_second,
        limiter=shared_limiter(
            settings.require_key(),
            api_base=settings.stripe.api_base,
            max_requests_per_second=settings.stripe.max_requests_per_second,
            share=settings.stripe.limit_share,
            limiter_url=settings.stripe.limiter_url,
        ),
        policy=retry_policy(settings),
        timeout_seconds=settings.stripe.timeout_seconds,
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    first = settings.stripe.retry_initial_delay
    return RetryPolicy(
        max_retries=settings.stripe.max_retries, initial_delay=first, max_delay=8 * first
    )


def execute_job(
    job: Job,
    settings: Settings,
    *,
    out_dir: Path | None = None,
    options: Mapping[str, Any] | None = None,
    fail_on: str | None = None,
    gateway_factory: Callable[[Settings], StripeGateway] | None = None,
    after_run: Sequence[AfterRun] = (),
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RunOutcome:
    """Run one job to completion; raises ReconcileError subclasses with their exit codes.

    In the main thread (a `run` command), SIGTERM and SIGINT ask the run to stop as in
    `serve`: after the page in hand, recorded `interrupted`, exit 130; a second signal
    stops it at once.
    """
    started_at = now()
    run_id = new_run_id(started_at)
    gateway = (gateway_factory or build_gateway)(settings)
    state = StateStore(settings.state.url)
    bind_log_context(run_id=run_id, job=job.name)
    clock_start = time.monotonic()
    outcome: RunOutcome | None = None
    try:
        with (
            _stop_on_signals(options or {}) as options,
            _job_lease(state, job.name, _owner(run_id), settings, options) as lease,
        ):
            # Before the first request: a run that would overspend the reads is refused.
            check_read_budget(
                state,
                job=job.name,
                mode=gateway.mode.value,
                budget=settings.stripe.monthly_read_budget,
                options=options or {},
            )
            outcome = _run_recorded(
                job,
                settings,
                state,
                gateway,
                run_id=run_id,
                started_at=started_at,
                out_dir=out_dir or settings.reports.out,
                options=options or {},
                fail_on=fail_on,
                now=now,
                lease=lease,
            )
    finally:
        record_run_stats(
            state,
            run_id,
            gateway.stats,
            round(time.monotonic() - clock_start, 3),
            customers=_customers_seen(outcome),
        )
        state.close()
    try:
        # Every run: the listing's work folder goes, metrics are written where configured.
        _deliver(outcome, settings, [_forget_listing, *after_run, _write_metrics])
    finally:
        unbind_log_context("run_id", "job")
    return outcome


@contextmanager
def _stop_on_signals(options: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The options with a stop event that SIGTERM or SIGINT sets, while the block runs.

    Only where no one else handles them: `serve` passes its own event, and a signal
    handler can only be installed from the main thread.
    """
    if STOP_OPTION in options or threading.current_thread() is not threading.main_thread():
        yield options
        return
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        # Only a flag: the main thread may hold the log's locks at this instant.
        if stop.is_set():
            raise KeyboardInterrupt  # asked twice: stop now (the run is still recorded)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield {**options, STOP_OPTION: stop}
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _job_lease(
    state: StateStore, job: str, owner: str, settings: Settings, options: Mapping[str, Any]
) -> Iterator[Lease]:
    """The job's lease for the block: `[resume] lease_seconds`, renewed every third of it."""
    ttl = settings.resume.lease_seconds
    resuming = resume_requested(options) or settings.resume.auto
    _take_lock(state, job, owner, ttl, wait=resuming, stop=options.get(STOP_OPTION))
    with state.lease(job, owner, ttl, acquired=True) as lease:
        yield lease


def _take_lock(
    state: StateStore,
    job: str,
    owner: str,
    ttl_seconds: float,
    *,
    wait: bool,
    stop: object = None,
) -> None:
    """Take `job`'s lease, after marking a dead holder's run interrupted.

    With `wait` (a run that resumes, e.g. a retried pod), a holder whose lease is not
    renewed is waited for until it expires, about one lease at most: a run killed on
    another host is taken over and resumed instead of the retry failing. A holder that
    renews (or changes) is alive: exit 5, as without `wait`.
    """
    first_seen: LockRecord | None = None
    deadline = time.monotonic() + ttl_seconds * 4 / 3 + 1
    while True:
        # One instant for both: a lease expiring between them would be taken over with
        # its run still recorded `running`, which a resume does not pick up.
        at = state.now()
        reap_dead_holder(state, job, now=at)
        if state.acquire_lock(job, owner, ttl_seconds, now=at):
            return
        holder = state.lock_holder(job)
        if holder is None:
            continue  # released in between: try again at once
        left = (holder.expires_at - at).total_seconds()
        renewed = first_seen is not None and holder != first_seen
        if not wait or renewed or time.monotonic() + left > deadline:
            raise LockHeldError(lock_held_message(job, holder))
        if first_seen is None:
            first_seen = holder
            log.info("waiting for the lease of a run that stopped renewing it", seconds=left)
        pause = min(max(left, 0.0) + 0.05, 1.0)
        if isinstance(stop, threading.Event):
            if stop.wait(pause):
                raise RunInterrupted("stopped by a signal while waiting for the job's lease")
        else:
            time.sleep(pause)


def _run_recorded(
    job: Job,
    settings: Settings,
    state: StateStore,
    gateway: StripeGateway,
    *,
    run_id: str,
    started_at: datetime,
    out_dir: Path,
    options: Mapping[str, Any],
    fail_on: str | None,
    now: Callable[[], datetime],
    lease: Lease | None = None,
) -> RunOutcome:
    state.start_run(run_id, job.name, started_at=started_at, mode=gateway.mode.value)
    log.info("run started", mode=gateway.mode.value, key=gateway.masked_key)
    clock_start = time.monotonic()
    from reconcile.userdb import UserDB

    userdb = UserDB(settings.userdb)
    try:
        ctx = JobContext(
            # Optional columns the users table lacks are off for the job, as if left out.
            settings=userdb.effective_settings(settings),
            gateway=gateway,
            userdb=userdb,
            state=state,
            run_id=run_id,
            started_at=started_at,
            out_dir=out_dir,
            dry_run=not options.get("apply", False),
            options=options,
            lease=lease,
        )
        result = job.run(ctx)
        from reports.changes import changes_since_last_run
        from reports.html import html_options
        from reports.writer import write_run_reports

        summary = _summary(job, run_id, gateway, started_at, now(), clock_start, result)
        summary["phase_seconds"] = {k: round(v, 3) for k, v in ctx.phase_seconds.items()}
        changes = changes_since_last_run(
            state, job.name, gateway.mode.value, run_id, result.findings
        )
        summary["changes"] = changes.counts()
        run_dir = write_run_reports(
            out_dir,
            job.name,
            run_id,
            result.findings,
            summary,
            formats=settings.reports.formats,
            extra_tables=result.extra_tables,
            file_mode=settings.reports.file_mode,
            changes=changes,
            html=html_options(settings),
        )
    except BaseException as exc:
        _record_failure(state, run_id, gateway, exc, now())
        _failed_run_metrics(job, run_id, gateway, exc, settings, now(), clock_start)
        raise
    finally:
        userdb.close()
    state.finish_run(
        run_id,
        summary["status"],
        finished_at=now(),
        counts=summary["counts_by_kind"],
        requests=summary["requests_by_endpoint"],
        report_dir=str(run_dir),
        error=(
            f"{result.failed_actions} action(s) failed; "
            f"see {_actions_record(result, run_dir, settings)}"
            if result.failed_actions
            else None
        ),
    )
    log.info("run finished", findings=len(result.findings), report_dir=str(run_dir))
    return RunOutcome(
        run_id, run_dir, summary, result.findings, result, _exit_code(result, fail_on)
    )


def _record_failure(
    state: StateStore, run_id: str, gateway: StripeGateway, exc: BaseException, at: datetime
) -> None:
    reason = exc.message if isinstance(exc, ReconcileError) else type(exc).__name__
    interrupted = KeyboardInterrupt | SystemExit | RunInterrupted
    status = "interrupted" if isinstance(exc, interrupted) else "failed"
    try:
        state.finish_run(
            run_id, status, finished_at=at, requests=dict(gateway.stats.by_endpoint), error=reason
        )
    except Exception:
        # The original error matters more than a state DB that also failed: keep raising it.
        log.exception("could not record the failed run")


def _customers_seen(outcome: RunOutcome | None) -> int | None:
    # What the read budget estimates the next runs from; only runs that saw them all.
    if outcome is None:
        return None
    seen = outcome.summary.get("customers_scanned")
    return seen if isinstance(seen, int) else None


def _failed_run_metrics(
    job: Job,
    run_id: str,
    gateway: StripeGateway,
    exc: BaseException,
    settings: Settings,
    at: datetime,
    clock_start: float,
) -> None:
    # Alerts need a failed run's status and exit code too, not only the age of a success.
    from reports.metrics import exit_code_of, failed_run_summary, write_failed_run_metrics

    interrupted = KeyboardInterrupt | SystemExit | RunInterrupted
    summary = failed_run_summary(
        job.name,
        run_id,
        "interrupted" if isinstance(exc, interrupted) else "failed",
        gateway.stats,
        at,
        round(time.monotonic() - clock_start, 3),
    )
    write_failed_run_metrics(summary, exit_code_of(exc), settings)


def _exit_code(result: JobResult, fail_on: str | None) -> int:
    if result.failed_actions:
        return EXIT_ACTIONS_FAILED
    if fail_on is not None and any(
        severity_at_least(s, fail_on) for s in result.findings["severity"]
    ):
        return EXIT_FINDINGS
    return EXIT_OK


def _actions_record(result: JobResult, run_dir: Path, settings: Settings) -> Path:
    """The file of the run folder that says which actions failed: the write jobs' audit;
    card-expiry's reminders are counted in the summary."""
    if "audit" in result.extra_tables:
        return run_dir / ("audit.csv" if "csv" in settings.reports.formats else "audit.parquet")
    return run_dir / "summary.json"


def _write_metrics(outcome: RunOutcome, settings: Settings) -> None:
    from reports.metrics import write_metrics

    write_metrics(outcome, settings)


def _forget_listing(outcome: RunOutcome, settings: Settings) -> None:
    # AfterRun, first: the report is in place, so the listing's copy of the customers goes.
    forget_listing(settings.state.url, outcome.run_id)


def _deliver(outcome: RunOutcome, settings: Settings, after_run: Sequence[AfterRun]) -> None:
    failures: list[str] = []
    for step in after_run:
        try:
            step(outcome, settings)
        except DeliveryError as exc:
            log.error("delivery failed", reason=exc.message)
            failures.append(exc.message)
    if failures:
        raise DeliveryError(f"{'; '.join(failures)} (the reports are kept in {outcome.run_dir})")


def _counts(findings: pd.DataFrame) -> dict[str, int]:
    counts = findings["kind"].value_counts()
    return {
        str(kind): int(count) for kind, count in sorted(counts.items(), key=lambda kv: str(kv[0]))
    }


def _summary(
    job: Job,
    run_id: str,
    gateway: StripeGateway,
    started_at: datetime,
    finished_at: datetime,
    clock_start: float,
    result: JobResult,
) -> dict[str, Any]:
    stats = gateway.stats
    return {
        "job": job.name,
        "run_id": run_id,
        "status": "partial" if result.failed_actions else "succeeded",
        "mode": gateway.mode.value,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "duration_seconds": round(time.monotonic() - clock_start, 3),
        **result.facts,
        "counts_by_kind": _counts(result.findings),
        "requests_total": sum(stats.by_endpoint.values()),
        "requests_by_endpoint": dict(sorted(stats.by_endpoint.items())),
        "retries": stats.retries,
        "rate_limited": stats.rate_limited,
    }
