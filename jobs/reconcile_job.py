"""The reconcile job: list every customer, read every user, report every disagreement."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import pandas as pd

from jobs.base import Job, JobContext, JobResult
from reconcile.compare import CompareConfig, compare_all, missing_customer_ids
from reconcile.errors import StripeNotFoundError
from reconcile.logs import get_logger
from reconcile.mode import Mode
from reconcile.pager import iter_customers
from reconcile.settings import UserDBSettings
from reconcile.snapshots import customers_frame

__all__ = ["JOB", "classify_missing", "compare_config", "metadata_keys_needed"]

log = get_logger(__name__)

MissingCause = Literal["deleted", "other_mode", "absent"]


def compare_config(settings: UserDBSettings, key_mode: Mode | None = None) -> CompareConfig:
    return CompareConfig(
        user_id_metadata_key=settings.user_id_metadata_key,
        metadata_keys=settings.metadata_keys,
        compare_email=True,
        compare_name=settings.name_column is not None,
        scope=dict(settings.scope),
        key_mode=None if key_mode is None else key_mode.value,
    )


def metadata_keys_needed(settings: UserDBSettings) -> list[str]:
    keys = [settings.user_id_metadata_key, *settings.metadata_keys, *settings.scope]
    return list(dict.fromkeys(keys))


def classify_missing(
    ctx: JobContext, customer_ids: Iterable[str]
) -> tuple[dict[str, MissingCause], list[dict[str, Any]]]:
    """Retrieve each missing id once: deleted, of the other mode, absent — or created meanwhile.

    A customer created after the listing's fixed upper bound is not missing; it is
    returned so the caller can add it to the snapshot.
    """
    causes: dict[str, MissingCause] = {}
    late: list[dict[str, Any]] = []
    for customer_id in customer_ids:
        try:
            found = ctx.gateway.retrieve_customer(customer_id)
        except StripeNotFoundError as exc:
            causes[customer_id] = "other_mode" if exc.other_mode else "absent"
            continue
        if found.get("deleted"):
            causes[customer_id] = "deleted"
        else:
            late.append(found)
    return causes, late


def run(ctx: JobContext) -> JobResult:
    settings = ctx.settings.userdb
    users = ctx.userdb.read_users()
    log.info("users read", users=len(users))

    created_lt = int(ctx.started_at.timestamp())
    keys = metadata_keys_needed(settings)
    records = list(iter_customers(ctx.gateway, created_lt=created_lt))
    if records:
        ctx.gateway.confirm_mode(records[0])
    customers = customers_frame(records, keys)
    log.info("customers listed", customers=len(customers), created_lt=created_lt)

    causes, late = classify_missing(ctx, missing_customer_ids(customers, users))
    if late:
        customers = pd.concat([customers, customers_frame(late, keys)], ignore_index=True)
    findings = compare_all(customers, users, compare_config(settings, ctx.gateway.mode), causes)
    return JobResult(
        findings=findings,
        facts={
            "customers_scanned": len(customers),
            "users_scanned": len(users),
            "snapshot_created_lt": created_lt,
            "missing_customer_lookups": len(causes) + len(late),
        },
    )


JOB = Job(
    name="reconcile",
    description=(
        "Compare every Stripe customer with the user database: duplicates, orphans on both "
        "sides, stale metadata, customers of deleted users."
    ),
    run=run,
)
