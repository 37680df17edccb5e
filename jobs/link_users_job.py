"""link-users: write customer ids into the user DB; optionally create missing customers.

Before each link or create, the user row and the customer are read again
(`recheck_link`, `recheck_create`): a customer deleted since the listing is never linked,
and a user linked, removed or soft-deleted meanwhile gets nothing.
"""

from __future__ import annotations

from jobs.apply import ActionDone, PlannedAction, carry_out, current_customer, skipped
from jobs.base import Job, JobContext, JobResult
from jobs.maintenance_snapshot import read_snapshot
from reconcile.job_options import LinkUsersOptions
from reconcile.rules.findings import FindingKind
from reconcile.rules.plans import ACTION_CREATE_AND_LINK, ACTION_LINK_USER, plan_link_users
from reconcile.state.audit import Outcome

__all__ = ["JOB", "create_and_link", "link_user", "recheck_create", "recheck_link"]

NAME = "link-users"


def _user_not_linkable(ctx: JobContext, action: PlannedAction) -> ActionDone | None:
    """Why the user must not get a link now, or None when its column is still empty."""
    user = ctx.userdb.read_user(action.user_id)
    if user is None:
        return skipped(f"user {action.user_id} is no longer in the user DB")
    if user.get("deleted"):
        return skipped(f"user {action.user_id} is soft-deleted")
    linked = str(user.get("customer_id") or "").strip()
    if linked:
        # Someone linked the user meanwhile: their link stays, there is nothing to write.
        return ActionDone(after={"customer_id": linked, "linked": False}, outcome=Outcome.UNCHANGED)
    return None


def recheck_link(ctx: JobContext, action: PlannedAction) -> PlannedAction | ActionDone:
    customer = current_customer(ctx, action.customer_id)
    if customer is None:
        return skipped(f"customer {action.customer_id} was deleted")
    key = ctx.settings.userdb.user_id_metadata_key
    named = str((customer.get("metadata") or {}).get(key) or "").strip()
    if named and named != action.user_id:
        return skipped(f"customer {action.customer_id}'s metadata {key} now names another user")
    return _user_not_linkable(ctx, action) or action


def recheck_create(ctx: JobContext, action: PlannedAction) -> PlannedAction | ActionDone:
    return _user_not_linkable(ctx, action) or action


def link_user(ctx: JobContext, action: PlannedAction) -> ActionDone:
    # Only where the column is still empty: a link someone wrote meanwhile stays.
    wrote = ctx.userdb.link_customer(action.user_id, action.customer_id)
    return ActionDone(
        after={"customer_id": action.customer_id, "linked": wrote},
        outcome=Outcome.APPLIED if wrote else Outcome.UNCHANGED,
    )


def create_and_link(ctx: JobContext, action: PlannedAction) -> ActionDone:
    """Create (a resumed run sends the same key and gets the same customer back, checked
    to be still there), then link."""
    created = ctx.gateway.create_customer(action.params, idempotency_key=action.idempotency_key)
    customer_id = str(created["id"])
    wrote = ctx.userdb.link_customer(action.user_id, customer_id)
    return ActionDone(after={"customer_id": customer_id, "linked": wrote}, customer_id=customer_id)


def run(ctx: JobContext) -> JobResult:
    snapshot = read_snapshot(ctx, NAME)
    settings = ctx.settings.userdb
    unlinked = snapshot.findings[
        (snapshot.findings["kind"] == FindingKind.UNLINKED_USER.value).to_numpy()
    ].reset_index(drop=True)
    plan = plan_link_users(
        unlinked,
        snapshot.users,
        create_missing=bool(ctx.options.get("create_missing", False)),
        user_id_metadata_key=settings.user_id_metadata_key,
        scope=settings.scope,
        intent=snapshot.listing_id,
        job=NAME,
    )
    return carry_out(
        ctx,
        NAME,
        plan,
        {ACTION_LINK_USER: link_user, ACTION_CREATE_AND_LINK: create_and_link},
        rechecks={ACTION_LINK_USER: recheck_link, ACTION_CREATE_AND_LINK: recheck_create},
        findings=unlinked,
        facts=snapshot.facts(),
    )


JOB = Job(
    name=NAME,
    description=(
        "Write the customer id of each unlinked user with exactly one match into the user DB; "
        "--create-missing creates customers for users without one."
    ),
    run=run,
    options_model=LinkUsersOptions,
    writes=True,
)
