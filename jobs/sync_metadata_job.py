"""sync-metadata: push the mapped user columns (and optionally email and name) to Stripe."""

from __future__ import annotations

from jobs.apply import ActionDone, PlannedAction, carry_out
from jobs.base import Job, JobContext, JobResult
from jobs.maintenance_snapshot import read_snapshot
from reconcile.findings import FindingKind
from reconcile.plans import ACTION_UPDATE_CUSTOMER, SyncOptions, plan_sync_metadata

__all__ = ["JOB", "update_customer"]

NAME = "sync-metadata"


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
    maintenance = ctx.settings.maintenance
    plan = plan_sync_metadata(
        stale,
        current,
        SyncOptions(
            sync_email=maintenance.sync_email,
            sync_name=maintenance.sync_name,
            delete_when_null=maintenance.delete_when_null,
        ),
        job=NAME,
    )
    return carry_out(
        ctx,
        NAME,
        plan,
        {ACTION_UPDATE_CUSTOMER: update_customer},
        findings=stale,
        facts=snapshot.facts(),
    )


JOB = Job(
    name=NAME,
    description="Push mapped user columns into Stripe metadata (and email, name if configured).",
    run=run,
    writes=True,
)
