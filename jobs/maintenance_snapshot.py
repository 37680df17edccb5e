"""What every maintenance job starts from: the users, the customers, and the findings.

The same reading as the reconcile job (jobs/reconcile_job.py): the concurrent, resumable
listing (reconcile.listing.resume), keyed by the job's name, with its upper bound one second
past the run's start. A resumed run must see customers that the run it resumes created a
moment earlier, or it would plan to create them again: its adopted listing gets one more
window, up to this run's bound.

The snapshot keeps its listing's id: the intent of every write planned from it (see
`reconcile.rules.idempotency`), the same for a run and the runs that resume its listing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from jobs.base import JobContext
from jobs.listing_run import listing_run
from jobs.reconcile_job import classify_missing, compare_config, metadata_keys_needed
from reconcile.listing.resume import walk_customers
from reconcile.logs import get_logger
from reconcile.rules.compare import MissingCause, compare_all, missing_customer_ids
from reconcile.rules.snapshots import customers_frame

__all__ = ["Snapshot", "read_snapshot"]

log = get_logger(__name__)


@dataclass(frozen=True)
class Snapshot:
    users: pd.DataFrame
    customers: pd.DataFrame
    records: dict[str, dict[str, Any]]  # customer id -> the listing's object
    findings: pd.DataFrame
    causes: dict[str, MissingCause]  # missing customer id -> why
    # The listing's id: this run's id, or the resumed run's (it survives adoption).
    listing_id: str

    def facts(self) -> dict[str, Any]:
        return {"customers_scanned": len(self.customers), "users_scanned": len(self.users)}


def read_snapshot(ctx: JobContext, job: str, extra_metadata_keys: Sequence[str] = ()) -> Snapshot:
    """Users, customers (the resumable listing of `job`) and the findings between them."""
    settings = ctx.settings.userdb
    users = ctx.userdb.read_users()
    keys = [*metadata_keys_needed(settings), *extra_metadata_keys]
    listed, listing = walk_customers(
        listing_run(ctx, job), bound_offset=1, extend_on_resume=True
    )
    records = {record["id"]: record for record in listed}
    del listed
    if records:
        ctx.gateway.confirm_mode(next(iter(records.values())))
    customers = customers_frame(records.values(), keys)
    causes, late = classify_missing(
        ctx,
        missing_customer_ids(customers, users),
        linked_users=int(users["customer_id"].notna().sum()),
    )
    if late:
        records.update({record["id"]: record for record in late})
        customers = pd.concat([customers, customers_frame(late, keys)], ignore_index=True)
    config = compare_config(settings, ctx.gateway.mode)
    findings = compare_all(customers, users, config, causes)
    log.info("snapshot read", customers=len(customers), users=len(users), findings=len(findings))
    return Snapshot(users, customers, records, findings, causes, listing.listing_id)
