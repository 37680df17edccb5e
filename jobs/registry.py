"""Every job the runner knows, by name."""

from __future__ import annotations

from collections.abc import Mapping

from jobs import reconcile_job
from jobs.base import Job

__all__ = ["JOBS", "READ_ONLY_JOBS"]

JOBS: Mapping[str, Job] = {job.name: job for job in (reconcile_job.JOB,)}
READ_ONLY_JOBS: tuple[str, ...] = tuple(name for name, job in JOBS.items() if not job.writes)
