"""sync-metadata: push the mapped user columns (and optionally email and name) to Stripe.

Each update is recomputed, just before it is sent, from the customer and the user row as
they are then (`recheck_update`): the listing may be old, and someone may have changed
either meanwhile.
"""

from __future__ import annotations

from jobs.apply import ActionDone, PlannedAction, carry_out, current_customer, skipped
from jobs.base import Job, JobContext, JobResult
from jobs.maintenance_snapshot import read_snapshot
from reconcile.job_options import WriteJobOptions
from reconcile.rules.findings import FindingKind
from reconcile.rules.idempotency import rekey, unmet_params
from reconcile.rules.plans import (
    ACTION_UPDATE_CUSTOMER,
    SyncOptions,
    plan_sync_metadata,
    replan_sync_update,
)
from reconcile.state.audit import Outcome

__all__ = ["JOB", "recheck_update", "update_customer"]

NAME = "sync-metadata"


def _options(ctx: JobContext) -> SyncOptions:
    maintenance = ctx.settings.maintenance
    return SyncOptions(
        sync_email=maintenance.sync_email,
        sync_name=maintenance.sync_name,
        delete_when_null=maintenance.delete_when_null,
        user_id_metadata_key=ctx.settings.userdb.user_id_metadata_key,
    )


def recheck_update(ctx: JobContext, action: PlannedAction) -> PlannedAction | ActionDone:
    """The update recomputed from the customer and the user row as they are now."""
    customer = current_customer(ctx, action.customer_id)
    if customer is None:
        return skipped(f"customer {action.customer_id} was deleted")
    if not action.user_id:
        # Several users map to the customer: no one row to recompute from, only compare.
        changed = unmet_params(customer, action.before)
        if changed:
            return skipped(f"customer {action.customer_id}'s {', '.join(changed)} changed")
        return action
    user = ctx.userdb.read_user(action.user_id)
    fresh = replan_sync_update(action.params, customer, user, _options(ctx))
    if fresh.skip:
        return skipped(fresh.skip)
    if not fresh.params:
        return ActionDone(after={}, outcome=Outcome.UNCHANGED)
    if dict(fresh.params) == action.params and dict(fresh.before) == action.before:
        return action
    return PlannedAction(
        action=action.action,
        customer_id=action.customer_id,
        user_id=action.user_id,
        params=dict(fresh.params),
        before=dict(fresh.before),
        reason=action.reason + " (re-planned: changed since the listing)",
        idempotency_key=rekey(action.idempotency_key, fresh.params, fresh.before),
    )


def update_customer(ctx: JobContext, action: PlannedAction) -> ActionDone:
    """One update with every change of the customer (Stripe merges metadata keys)."""
    updated = ctx.gateway.update_customer(
        action.customer_id, action.params, idempotency_key=action.idempotency_key
    )
    after: dict[str, object] = {
        name: updated.get(name) for name in action.params if name != "metadata"
    }
    if "metadata" in action.params:
        metadata = updated.get("metadata") or {}
        after["metadata"] = {key: metadata.get(key) for key in action.params["metadata"]}
    return ActionDone(after=after)


def run(ctx: JobContext) -> JobResult:
    snapshot = read_snapshot(ctx, NAME)
    stale = snapshot.findings[
        (snapshot.findings["kind"] == FindingKind.STALE_METADATA.value).to_numpy()
    ].reset_index(drop=True)
    current = {
        cid: dict(snapshot.records[cid].get("metadata") or {})
        for cid in set(stale["customer_id"].astype(str))
        if cid in snapshot.records
    }
    plan = plan_sync_metadata(
        stale, current, _options(ctx), intent=snapshot.listing_id, job=NAME
    )
    return carry_out(
        ctx,
        NAME,
        plan,
        {ACTION_UPDATE_CUSTOMER: update_customer},
        rechecks={ACTION_UPDATE_CUSTOMER: recheck_update},
        findings=stale,
        facts=snapshot.facts(),
    )


JOB = Job(
    name=NAME,
    description="Push mapped user columns into Stripe metadata (and email, name if configured).",
    run=run,
    options_model=WriteJobOptions,
    writes=True,
)
