"""Every job the runner knows, by name."""

from __future__ import annotations

from collections.abc import Mapping

from jobs import (
    card_expiry_job,
    dedupe_job,
    default_payment_method_job,
    gdpr_delete_job,
    link_users_job,
    reconcile_job,
    sync_metadata_job,
)
from jobs.base import Job

__all__ = ["JOBS", "READ_ONLY_JOBS"]

JOBS: Mapping[str, Job] = {
    job.name: job
    for job in (
        reconcile_job.JOB,
        card_expiry_job.JOB,
        sync_metadata_job.JOB,
        link_users_job.JOB,
        dedupe_job.JOB,
        gdpr_delete_job.JOB,
        default_payment_method_job.JOB,
    )
}
READ_ONLY_JOBS: tuple[str, ...] = tuple(name for name, job in JOBS.items() if not job.writes)
