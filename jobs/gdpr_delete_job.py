"""gdpr-delete: delete the Stripe customer of each soft-deleted user, then clear the link.

Audit rows and reports of this job hold ids only: it exists to remove personal data.

Just before each delete, `recheck_delete` reads the user DB and the customer again: a
user restored or relinked since the listing, a user who is not deleted linking to the
customer, or a subscription that is not over (deleting would cancel it at once) keeps
the customer and the link (`skipped`, with the reason). The link is cleared by one
UPDATE that requires the row to still hold the customer and to still be soft-deleted.
"""

from __future__ import annotations

from jobs.apply import ActionDone, PlannedAction, carry_out
from jobs.base import Job, JobContext, JobResult
from jobs.delete_checks import customer_now, not_done
from jobs.maintenance_snapshot import read_snapshot
from jobs.per_customer import DeletedMeanwhile, scan_customers, scan_workers, unless_deleted
from jobs.reconcile_job import classify_missing
from reconcile.job_options import WriteJobOptions
from reconcile.rules.deletion import (
    gdpr_delete_blockers,
    gdpr_link_blockers,
    live_subscription_statuses,
)
from reconcile.rules.findings import FindingKind
from reconcile.rules.plans import ACTION_CLEAR_LINK, ACTION_DELETE_CUSTOMER, plan_gdpr_delete
from reconcile.state.audit import Outcome

__all__ = ["JOB", "clear_link", "delete_customer", "recheck_clear", "recheck_delete"]

NAME = "gdpr-delete"


def recheck_delete(ctx: JobContext, action: PlannedAction) -> PlannedAction | ActionDone:
    """Just before the delete, from fresh reads: the customer has no subscription that is
    not over (deleting would cancel it at once: a billing decision for a person), the user
    is still soft-deleted and still holds this customer, and no user who is not deleted
    links to it (the user DB last: the likeliest to change). Any of them failing keeps
    the customer and the link (`skipped`, with the reasons)."""
    now = customer_now(ctx, action.customer_id, payment_methods=False)
    linked = ctx.userdb.users_linked_to(action.customer_id)
    reasons = (
        gdpr_delete_blockers(action.user_id, linked, now.live_subscriptions)
        if now is not None
        # Already deleted in Stripe: only the user's own link is left to clear.
        else gdpr_link_blockers(action.user_id, linked)
    )
    return not_done("not deleted", reasons) if reasons else action


def delete_customer(ctx: JobContext, action: PlannedAction) -> ActionDone:
    """Delete the customer (once `recheck_delete` let it through), then clear the link."""
    deletion = ctx.gateway.delete_customer(
        action.customer_id, idempotency_key=action.idempotency_key
    )
    # Only where the row still holds this id and is still soft-deleted (one UPDATE).
    cleared = ctx.userdb.clear_customer(action.user_id, action.customer_id)
    return ActionDone(
        after={"customer_deleted": deletion.deleted_now, "link_cleared": cleared},
        outcome=Outcome.APPLIED if deletion.deleted_now or cleared else Outcome.UNCHANGED,
    )


def recheck_clear(ctx: JobContext, action: PlannedAction) -> PlannedAction | ActionDone:
    """The user must still be soft-deleted and still hold the (deleted) customer."""
    reasons = gdpr_link_blockers(action.user_id, ctx.userdb.users_linked_to(action.customer_id))
    return not_done("link kept", reasons) if reasons else action


def clear_link(ctx: JobContext, action: PlannedAction) -> ActionDone:
    """Clear the link of a soft-deleted user whose customer is already deleted."""
    cleared = ctx.userdb.clear_customer(action.user_id, action.customer_id)
    return ActionDone(
        after={"link_cleared": cleared},
        outcome=Outcome.APPLIED if cleared else Outcome.UNCHANGED,
    )


def _live_subscriptions(ctx: JobContext, customer_ids: list[str]) -> dict[str, list[str]]:
    """The statuses of each customer's subscriptions that are not over, so the plan (and a
    dry run) already shows the deletes that would cancel billing as skips; checked again
    just before each delete. One read per customer to delete."""

    def statuses(customer_id: str) -> list[str] | DeletedMeanwhile:
        return unless_deleted(
            ctx.gateway,
            customer_id,
            lambda: live_subscription_statuses(
                ctx.gateway.list_subscriptions(customer_id, status="all")
            ),
        )

    found = scan_customers(
        customer_ids,
        statuses,
        workers=scan_workers(ctx.gateway.limiter),
        description="listing subscriptions",
    )
    return {
        customer_id: result
        for customer_id, result in zip(customer_ids, found, strict=True)
        if not isinstance(result, DeletedMeanwhile) and result
    }


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
    live = _live_subscriptions(ctx, sorted(set(pending["customer_id"].astype(str))))
    plan = plan_gdpr_delete(
        pending,
        users,
        causes,
        intent=snapshot.listing_id,
        live_subscriptions=live,
        job=NAME,
    )
    return carry_out(
        ctx,
        NAME,
        plan,
        {ACTION_DELETE_CUSTOMER: delete_customer, ACTION_CLEAR_LINK: clear_link},
        rechecks={ACTION_DELETE_CUSTOMER: recheck_delete, ACTION_CLEAR_LINK: recheck_clear},
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
    options_model=WriteJobOptions,
    writes=True,
)
