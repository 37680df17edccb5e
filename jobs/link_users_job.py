"""link-users: write customer ids into the user DB; optionally create missing customers."""

from __future__ import annotations

from jobs.apply import ActionDone, PlannedAction, carry_out
from jobs.audit import Outcome
from jobs.base import Job, JobContext, JobResult
from jobs.maintenance_snapshot import read_snapshot
from reconcile.findings import FindingKind
from reconcile.plans import ACTION_CREATE_AND_LINK, ACTION_LINK_USER, plan_link_users

__all__ = ["JOB", "create_and_link", "link_user"]

NAME = "link-users"


def link_user(ctx: JobContext, action: PlannedAction) -> ActionDone:
    # Only where the column is still empty: a link someone wrote meanwhile stays.
    wrote = ctx.userdb.link_customer(action.user_id, action.customer_id)
    return ActionDone(
        after={"customer_id": action.customer_id, "linked": wrote},
        outcome=Outcome.APPLIED if wrote else Outcome.UNCHANGED,
    )


def create_and_link(ctx: JobContext, action: PlannedAction) -> ActionDone:
    """Create (the key is per user: a resumed run gets the same customer back), then link."""
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
        job=NAME,
    )
    return carry_out(
        ctx,
        NAME,
        plan,
        {ACTION_LINK_USER: link_user, ACTION_CREATE_AND_LINK: create_and_link},
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
    writes=True,
)
