"""Every job the runner knows, by name, and what `run JOB --help` says of it.

The catalogue is plain data, so the command line can list the jobs and build their
`run` commands without importing them: a job's module (pandas, the Stripe SDK,
SQLAlchemy) is imported when the job is looked up in `JOBS`, and only that job's.
Each job's options model is `reconcile.job_options.OPTION_MODELS[name]`, which the job
declares too (`Job.options_model`); tests/cli checks that both agree with the catalogue.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.base import Job

__all__ = ["CATALOGUE", "JOBS", "READ_ONLY_JOBS", "JobEntry", "load_job"]


@dataclass(frozen=True)
class JobEntry:
    name: str
    # The module whose `JOB` is the job.
    module: str
    # The help of `run NAME` (its first sentence is its line in `run --help`).
    help: str
    writes: bool = False


CATALOGUE: tuple[JobEntry, ...] = (
    JobEntry(
        "reconcile",
        "jobs.reconcile_job",
        "Find duplicates, orphans, missing and unlinked customers, and stale metadata.",
    ),
    JobEntry(
        "card-expiry",
        "jobs.card_expiry_job",
        "Find expiring and expired cards and list (or --send) reminders to their customers.",
    ),
    JobEntry(
        "sync-metadata",
        "jobs.sync_metadata_job",
        "Push mapped user columns into Stripe metadata, one update per customer.",
        writes=True,
    ),
    JobEntry(
        "link-users",
        "jobs.link_users_job",
        "Write the customer id of each unlinked user with exactly one match into the user DB.",
        writes=True,
    ),
    JobEntry(
        "dedupe",
        "jobs.dedupe_job",
        "Delete safe duplicate customers; tag the others with metadata.duplicate_of.",
        writes=True,
    ),
    JobEntry(
        "gdpr-delete",
        "jobs.gdpr_delete_job",
        "Delete the Stripe customer of each soft-deleted user, then clear the local link.",
        writes=True,
    ),
    JobEntry(
        "default-payment-method",
        "jobs.default_payment_method_job",
        "Make the newest unexpired card the default of customers that have cards but none.",
        writes=True,
    ),
)
_BY_NAME: dict[str, JobEntry] = {entry.name: entry for entry in CATALOGUE}


def load_job(name: str) -> Job:
    """The job called `name`, its module imported now; KeyError for an unknown name."""
    job: Job = importlib.import_module(_BY_NAME[name].module).JOB
    return job


class _LazyJobs(Mapping[str, "Job"]):
    """`JOBS`: names and membership without imports; a job's module on first lookup."""

    def __getitem__(self, name: str) -> Job:
        return load_job(name)

    def __iter__(self) -> Iterator[str]:
        return iter(_BY_NAME)

    def __len__(self) -> int:
        return len(_BY_NAME)

    def __contains__(self, name: object) -> bool:
        return name in _BY_NAME


JOBS: Mapping[str, Job] = _LazyJobs()
READ_ONLY_JOBS: tuple[str, ...] = tuple(entry.name for entry in CATALOGUE if not entry.writes)
