"""dedupe: keep one canonical customer per duplicate group; delete safe duplicates, tag others.

The plan counts each member's payment methods of every type and its subscriptions that
are not over (any status but canceled / incomplete_expired). Just before each delete,
`recheck_delete` reads all of it again, with the balance and the user DB's links, and
keeps the customer (`skipped`) if anything changed. A member deleted since the listing
(also one that a killed run deleted, still in the stored pages a resumed run reads) is
counted as `customers_deleted_during_run`, never a failed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from jobs.apply import ActionDone, PlannedAction, carry_out, skipped
from jobs.base import Job, JobContext, JobResult
from jobs.delete_checks import already_deleted, current_customer, customer_now, not_done
from jobs.maintenance_snapshot import read_snapshot
from jobs.per_customer import DeletedMeanwhile, scan_customers, scan_workers, unless_deleted
from reconcile.job_options import WriteJobOptions
from reconcile.logs import get_logger
from reconcile.rules.deletion import dedupe_delete_blockers, live_subscription_statuses
from reconcile.rules.findings import FindingKind
from reconcile.rules.plans import (
    ACTION_DELETE_CUSTOMER,
    ACTION_TAG_DUPLICATE,
    DedupeFacts,
    plan_dedupe,
)
from reconcile.state.audit import Outcome

__all__ = ["JOB", "delete_duplicate", "recheck_delete", "recheck_tag", "tag_duplicate"]

log = get_logger(__name__)

NAME = "dedupe"
DUPLICATE_OF = "duplicate_of"


@dataclass(frozen=True)
class Activity:
    """What keeps a duplicate from being deleted, as counted for the plan."""

    payment_methods: int  # of every type
    subscriptions: int  # not over (any status but canceled, incomplete_expired)


def _activity(ctx: JobContext, customer_id: str) -> Activity | DeletedMeanwhile:
    def read() -> Activity:
        methods = sum(1 for _ in ctx.gateway.list_payment_methods(customer_id, type=None))
        statuses = live_subscription_statuses(
            ctx.gateway.list_subscriptions(customer_id, status="all")
        )
        return Activity(methods, len(statuses))

    # A customer listed, then deleted (by a person, or by the killed run this one
    # resumes, whose stored pages still hold it) is no duplicate any more.
    return unless_deleted(ctx.gateway, customer_id, read)


def recheck_delete(ctx: JobContext, action: PlannedAction) -> PlannedAction | ActionDone:
    """Just before the delete, from fresh reads (never the listing), all the README
    promises: the duplicate still exists, has a zero balance, no subscription that is not
    over, no payment method of any type, and no user links to it now (the user DB last:
    the likeliest to change). Any of them failing keeps the customer (`skipped`); the next
    run plans to tag it instead."""
    now = customer_now(ctx, action.customer_id, payment_methods=True)
    if now is None:
        return already_deleted(action.customer_id)
    linked = ctx.userdb.users_linked_to(action.customer_id)
    reasons = dedupe_delete_blockers(
        linked_users=linked,
        live_subscriptions=now.live_subscriptions,
        payment_method_types=now.payment_method_types,
        balance=now.balance,
    )
    return not_done("not deleted", reasons) if reasons else action


def delete_duplicate(ctx: JobContext, action: PlannedAction) -> ActionDone:
    """The delete itself, once `recheck_delete` let it through."""
    deletion = ctx.gateway.delete_customer(
        action.customer_id, idempotency_key=action.idempotency_key
    )
    if not deletion.deleted_now:
        return already_deleted(action.customer_id)
    return ActionDone(after={"customer_id": action.customer_id, "deleted": True})


def recheck_tag(ctx: JobContext, action: PlannedAction) -> PlannedAction | ActionDone:
    """The tag as the customer holds it now: gone, already tagged, or tagged otherwise
    by someone since the listing (then a person's choice stands)."""
    customer = current_customer(ctx, action.customer_id)
    if customer is None:
        return already_deleted(action.customer_id)
    held = (customer.get("metadata") or {}).get(DUPLICATE_OF) or None
    wanted = action.params["metadata"][DUPLICATE_OF]
    if held == wanted:
        return ActionDone(after={"metadata": {DUPLICATE_OF: held}}, outcome=Outcome.UNCHANGED)
    planned_on = (action.before.get("metadata") or {}).get(DUPLICATE_OF)
    if held != planned_on:
        return skipped(f"customer {action.customer_id}'s metadata.{DUPLICATE_OF} changed")
    return action


def tag_duplicate(ctx: JobContext, action: PlannedAction) -> ActionDone:
    updated = ctx.gateway.update_customer(
        action.customer_id, action.params, idempotency_key=action.idempotency_key
    )
    metadata = updated.get("metadata") or {}
    return ActionDone(after={"metadata": {DUPLICATE_OF: metadata.get(DUPLICATE_OF)}})


def run(ctx: JobContext) -> JobResult:
    snapshot = read_snapshot(ctx, NAME)
    kinds = {FindingKind.DUPLICATE_USER_ID.value, FindingKind.DUPLICATE_EMAIL.value}
    duplicates = snapshot.findings[snapshot.findings["kind"].isin(kinds).to_numpy()].reset_index(
        drop=True
    )
    members = sorted(
        {
            member
            for cid, related in zip(
                duplicates["customer_id"], duplicates["related_ids"], strict=True
            )
            for member in [str(cid), *str(related).split(";")]
            if member in snapshot.records
        }
    )
    linked = set(snapshot.users["customer_id"].dropna().astype(str))
    activity = scan_customers(
        members,
        lambda customer_id: _activity(ctx, customer_id),
        workers=scan_workers(ctx.gateway.limiter),
        description="checking duplicates' activity",
    )
    rows: list[dict[str, Any]] = []
    deleted_meanwhile: list[str] = []
    for customer_id, found in zip(members, activity, strict=True):
        if isinstance(found, DeletedMeanwhile):
            deleted_meanwhile.append(customer_id)
            continue
        record = snapshot.records[customer_id]
        tagged = (record.get("metadata") or {}).get(DUPLICATE_OF)
        rows.append(
            {
                "customer_id": customer_id,
                "created": int(record.get("created") or 0),
                "linked": customer_id in linked,
                "payment_methods": found.payment_methods,
                "subscriptions": found.subscriptions,
                "balance": int(record.get("balance") or 0),
                "duplicate_of": str(tagged) if tagged else None,
            }
        )
    if deleted_meanwhile:
        log.info("duplicates deleted since the listing", customers=len(deleted_meanwhile))
    facts_frame = pd.DataFrame.from_records(
        rows,
        columns=[
            "customer_id",
            "created",
            "linked",
            "payment_methods",
            "subscriptions",
            "balance",
            "duplicate_of",
        ],
    )
    plan = plan_dedupe(duplicates, DedupeFacts(facts_frame), intent=snapshot.listing_id, job=NAME)
    return carry_out(
        ctx,
        NAME,
        plan,
        {ACTION_DELETE_CUSTOMER: delete_duplicate, ACTION_TAG_DUPLICATE: tag_duplicate},
        rechecks={ACTION_DELETE_CUSTOMER: recheck_delete, ACTION_TAG_DUPLICATE: recheck_tag},
        findings=duplicates,
        facts={
            **snapshot.facts(),
            "duplicate_customers_checked": len(members),
            "customers_deleted_during_run": len(deleted_meanwhile),
        },
    )


JOB = Job(
    name=NAME,
    description=(
        "Pick a canonical customer per set of duplicates; delete the safe duplicates and tag "
        "the others with metadata.duplicate_of."
    ),
    run=run,
    options_model=WriteJobOptions,
    writes=True,
)
