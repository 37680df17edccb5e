"""What every job is: a name, whether it writes, and a function from a context to a result."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconcile.job_options import JobOptions
from reconcile.listing.checkpoints import RunInterrupted
from reconcile.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from reconcile.state.store import Lease, StateStore
    from reconcile.stripe_api.gateway import StripeGateway
    from reconcile.userdb import UserDB

__all__ = [
    "RESUME_OPTION",
    "RESUME_REQUESTED",
    "STOP_OPTION",
    "Job",
    "JobContext",
    "JobResult",
    "LeaseLostError",
    "resume_requested",
]


class LeaseLostError(RunInterrupted):
    """Another run took this job's lease over: this run stops before its next write."""


# A threading.Event in a run's options: set, the run stops at its next stored page and
# before its next write (SIGTERM/SIGINT to `run`, `serve` shutting down).
STOP_OPTION = "stop_event"
# `--resume` in a run's options: continue the listing of the job's last failed or
# interrupted run (reconcile.listing.resume), however old it is.
RESUME_OPTION = "resume"
# Set by the `--resume` flag every `run JOB` command gets (jobs.commands.runs), so jobs
# whose commands build their own options resume too.
RESUME_REQUESTED: ContextVar[bool] = ContextVar("resume_requested", default=False)


def resume_requested(options: Mapping[str, Any]) -> bool:
    """Whether the run was asked to resume, by its options or by the `--resume` flag."""
    return bool(options.get(RESUME_OPTION)) or RESUME_REQUESTED.get()


@dataclass
class JobContext:
    settings: Settings
    gateway: StripeGateway
    userdb: UserDB
    state: StateStore
    run_id: str
    started_at: datetime
    out_dir: Path
    dry_run: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)
    # Wall seconds of the run's phases (e.g. "listing": paging Stripe's customers), for
    # summary.json: where a slow run spent its time.
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # The job's lease (held by `execute_job`); None where a context is built without one.
    lease: Lease | None = None

    def check_lease(self) -> None:
        """Raise LeaseLostError unless this run still holds its lease, RunInterrupted once
        it was asked to stop; call before a write.

        Asks the state DB, not only the renewal thread's flag: a takeover must stop the
        very next write, not one up to a renewal period later.
        """
        stop = self.options.get(STOP_OPTION)
        if isinstance(stop, threading.Event) and stop.is_set():
            # SIGTERM/SIGINT (run) or serve shutting down: no write starts after it.
            raise RunInterrupted(
                "stopped by a signal before the next write; run the job again with --resume "
                "to continue"
            )
        lease = self.lease
        if lease is None:
            return
        holder = None if lease.lost else self.state.lock_holder(lease.job)
        if holder is None or holder.owner != lease.owner:
            raise LeaseLostError(
                f"the {lease.job} lease was taken over by another run: this run stopped "
                "before its next write; check `runs` for the run holding it"
            )

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block into `phase_seconds[name]` (added up if the phase recurs)."""
        started = time.monotonic()
        try:
            yield
        finally:
            elapsed = time.monotonic() - started
            self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + elapsed

    @property
    def today(self) -> date:
        return self.started_at.date()


def _no_findings() -> pd.DataFrame:
    # pandas comes in with the first result, not with the module: a run's first request
    # leaves before pandas is imported (tests/startup).
    from reconcile.rules.findings import empty_findings

    return empty_findings()


@dataclass
class JobResult:
    findings: pd.DataFrame = field(default_factory=_no_findings)
    facts: dict[str, Any] = field(default_factory=dict)
    extra_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    # Writes that were attempted and failed (each one is in the audit log); the run
    # goes on past them and exits 6.
    failed_actions: int = 0


@dataclass(frozen=True)
class Job:
    name: str
    description: str
    run: Callable[[JobContext], JobResult]
    writes: bool = False
    # The typed options of `run NAME` and of its `[schedule]` entries (OPTION_MODELS).
    options_model: type[JobOptions] = JobOptions
