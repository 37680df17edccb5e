"""What every job is: a name, whether it writes, and a function from a context to a result."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from reconcile.findings import empty_findings
from reconcile.settings import Settings
from reconcile.userdb import UserDB

if TYPE_CHECKING:
    from jobs.state import StateStore
    from reconcile.gateway import StripeGateway

__all__ = ["Job", "JobContext", "JobResult"]


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


@dataclass
class JobResult:
    findings: pd.DataFrame = field(default_factory=empty_findings)
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
