"""dedupe: keep one canonical customer per duplicate group; delete safe duplicates, tag others."""

from __future__ import annotations

from typing import Any

import pandas as pd

from jobs.apply import ActionDone, PlannedAction, carry_out
from jobs.audit import Outcome
from jobs.base import Job, JobContext, JobResult
from jobs.maintenance_snapshot import read_snapshot
from reconcile.findings import FindingKind
from reconcile.plans import (
    ACTION_DELETE_CUSTOMER,
    ACTION_TAG_DUPLICATE,
    DedupeFacts,
    plan_dedupe,
)

__all__ = ["JOB", "delete_duplicate", "tag_duplicate"]

NAME = "dedupe"
DUPLICATE_OF = "duplicate_of"


def _activity(ctx: JobContext, customer_id: str) -> tuple[int, int]:
    methods = sum(1 for _ in ctx.gateway.list_payment_methods(customer_id))
    subscriptions = sum(1 for _ in ctx.gateway.list_subscriptions(customer_id))
    return methods, subscriptions


def delete_duplicate(ctx: JobContext, action: PlannedAction) -> ActionDone:
    # Checked again just before deleting: a card or subscription may have arrived since
    # the snapshot. Then the customer stays, and the next run tags it instead.
    methods, subscriptions = _activity(ctx, action.customer_id)
    if methods or subscriptions:
        return ActionDone(
            after={"kept": True, "payment_methods": methods, "subscriptions": subscriptions},
            outcome=Outcome.UNCHANGED,
        )
    ctx.gateway.delete_customer(action.customer_id, idempotency_key=action.idempotency_key)
    return ActionDone(after={"customer_id": action.customer_id, "deleted": True})


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
    rows: list[dict[str, Any]] = []
    for customer_id in members:
        methods, subscriptions = _activity(ctx, customer_id)
        record = snapshot.records[customer_id]
        tagged = (record.get("metadata") or {}).get(DUPLICATE_OF)
        rows.append(
            {
                "customer_id": customer_id,
                "created": int(record.get("created") or 0),
                "linked": customer_id in linked,
                "payment_methods": methods,
                "subscriptions": subscriptions,
                "balance": int(record.get("balance") or 0),
                "duplicate_of": str(tagged) if tagged else None,
            }
        )
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
    plan = plan_dedupe(duplicates, DedupeFacts(facts_frame), job=NAME)
    return carry_out(
        ctx,
        NAME,
        plan,
        {ACTION_DELETE_CUSTOMER: delete_duplicate, ACTION_TAG_DUPLICATE: tag_duplicate},
        findings=duplicates,
        facts={**snapshot.facts(), "duplicate_customers_checked": len(members)},
    )


JOB = Job(
    name=NAME,
    description=(
        "Pick a canonical customer per set of duplicates; delete the safe duplicates and tag "
        "the others with metadata.duplicate_of."
    ),
    run=run,
    writes=True,
)
