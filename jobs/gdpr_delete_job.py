"""gdpr-delete: delete the Stripe customer of each soft-deleted user, then clear the link.

Audit rows and reports of this job hold ids only: it exists to remove personal data.
"""

from __future__ import annotations

from jobs.apply import ActionDone, PlannedAction, carry_out
from jobs.audit import Outcome
from jobs.base import Job, JobContext, JobResult
from jobs.maintenance_snapshot import read_snapshot
from jobs.reconcile_job import classify_missing
from reconcile.errors import StripeNotFoundError
from reconcile.findings import FindingKind
from reconcile.plans import ACTION_CLEAR_LINK, ACTION_DELETE_CUSTOMER, plan_gdpr_delete

__all__ = ["JOB", "clear_link", "delete_customer"]

NAME = "gdpr-delete"


def delete_customer(ctx: JobContext, action: PlannedAction) -> ActionDone:
    try:
        ctx.gateway.delete_customer(action.customer_id, idempotency_key=action.idempotency_key)
        deleted = True
    except StripeNotFoundError as exc:
        # Deleted by someone else since the snapshot: the purge is done either way.
        if exc.other_mode:
            raise
        deleted = False
    cleared = ctx.userdb.clear_customer(action.user_id, action.customer_id)
    return ActionDone(
        after={"customer_deleted": deleted, "link_cleared": cleared},
        outcome=Outcome.APPLIED if deleted or cleared else Outcome.UNCHANGED,
    )


def clear_link(ctx: JobContext, action: PlannedAction) -> ActionDone:
    cleared = ctx.userdb.clear_customer(action.user_id, action.customer_id)
    return ActionDone(
        after={"link_cleared": cleared},
        outcome=Outcome.APPLIED if cleared else Outcome.UNCHANGED,
    )


def run(ctx: JobContext) -> JobResult:
    snapshot = read_snapshot(ctx, NAME)
    users = snapshot.users
    deleted_links = users[(users["deleted"].astype(bool) & users["customer_id"].notna()).to_numpy()]
    unlisted = sorted(
        set(deleted_links["customer_id"].astype(str)) - set(snapshot.records) - set(snapshot.causes)
    )
    causes: dict[str, str] = dict(snapshot.causes)
    more, _late = classify_missing(ctx, unlisted)
    causes.update(more)
    pending = snapshot.findings[
        (snapshot.findings["kind"] == FindingKind.DELETED_USER_CUSTOMER.value).to_numpy()
    ].reset_index(drop=True)
    # The point of this job is to forget people: its report keeps their ids, not emails.
    pending["email"] = ""
    plan = plan_gdpr_delete(pending, users, causes, job=NAME)
    return carry_out(
        ctx,
        NAME,
        plan,
        {ACTION_DELETE_CUSTOMER: delete_customer, ACTION_CLEAR_LINK: clear_link},
        findings=pending,
        facts=snapshot.facts(),
    )


JOB = Job(
    name=NAME,
    description=(
        "Delete the Stripe customer of each soft-deleted user (Stripe purges its personal "
        "data), then clear the user's link."
    ),
    run=run,
    writes=True,
)
