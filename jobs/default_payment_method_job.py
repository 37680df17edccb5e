"""default-payment-method: customers with cards but no default get their newest valid card.

A customer deleted while its cards are listed becomes a skip row; before each write the
customer is read again (`recheck_default`): one that chose a default meanwhile, or was
deleted, is skipped, never overwritten.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from jobs.apply import ActionDone, PlannedAction, carry_out, current_customer, skipped
from jobs.base import Job, JobContext, JobResult
from jobs.maintenance_snapshot import read_snapshot
from jobs.per_customer import DeletedMeanwhile, scan_customers, scan_workers, unless_deleted
from jobs.reconcile_job import compare_config
from reconcile.job_options import WriteJobOptions
from reconcile.rules.compare import in_scope
from reconcile.rules.plans import ACTION_SET_DEFAULT_PM, plan_default_payment_method
from reconcile.state.audit import Outcome

__all__ = ["JOB", "recheck_default", "set_default"]

NAME = "default-payment-method"
CARD_COLUMNS = ["customer_id", "payment_method_id", "created", "exp_month", "exp_year"]


def _default_of(customer: dict[str, Any]) -> str | None:
    default = (customer.get("invoice_settings") or {}).get("default_payment_method")
    if isinstance(default, dict):
        default = default.get("id")
    return str(default) if default else None


def recheck_default(ctx: JobContext, action: PlannedAction) -> PlannedAction | ActionDone:
    customer = current_customer(ctx, action.customer_id)
    if customer is None:
        return skipped(f"customer {action.customer_id} was deleted")
    default = _default_of(customer)
    if default is None:
        return action
    wanted = (action.params.get("invoice_settings") or {}).get("default_payment_method")
    if default == wanted:
        return ActionDone(after={"default_payment_method": default}, outcome=Outcome.UNCHANGED)
    return skipped(f"customer {action.customer_id} now has a default payment method")


def set_default(ctx: JobContext, action: PlannedAction) -> ActionDone:
    updated = ctx.gateway.update_customer(
        action.customer_id, action.params, idempotency_key=action.idempotency_key
    )
    return ActionDone(after={"default_payment_method": _default_of(updated)})


def run(ctx: JobContext) -> JobResult:
    snapshot = read_snapshot(ctx, NAME)
    customers = snapshot.customers[
        in_scope(snapshot.customers, snapshot.users, compare_config(ctx.settings.userdb)).to_numpy()
    ]
    without_default = customers[customers["default_payment_method"].isna().to_numpy()]

    # No listing spans customers: one call per customer without a default, concurrently.
    def cards_of(customer_id: str) -> list[dict[str, Any]] | DeletedMeanwhile:
        methods = unless_deleted(
            ctx.gateway, customer_id, lambda: list(ctx.gateway.list_payment_methods(customer_id))
        )
        if isinstance(methods, DeletedMeanwhile):
            return methods
        cards = []
        for method in methods:
            card = method.get("card") or {}
            cards.append(
                {
                    "customer_id": customer_id,
                    "payment_method_id": str(method["id"]),
                    "created": int(method.get("created") or 0),
                    "exp_month": int(card.get("exp_month") or 0),
                    "exp_year": int(card.get("exp_year") or 0),
                }
            )
        return cards

    per_customer = scan_customers(
        list(without_default["customer_id"].astype(str)),
        cards_of,
        workers=scan_workers(ctx.gateway.limiter),
        description="listing payment methods",
    )
    gone = [found.customer_id for found in per_customer if isinstance(found, DeletedMeanwhile)]
    cards = [
        card
        for found in per_customer
        if not isinstance(found, DeletedMeanwhile)
        for card in found
    ]
    plan = plan_default_payment_method(
        customers,
        pd.DataFrame.from_records(cards, columns=CARD_COLUMNS),
        ctx.today,
        intent=snapshot.listing_id,
        gone=gone,
        job=NAME,
    )
    return carry_out(
        ctx,
        NAME,
        plan,
        {ACTION_SET_DEFAULT_PM: set_default},
        rechecks={ACTION_SET_DEFAULT_PM: recheck_default},
        facts={
            **snapshot.facts(),
            "customers_without_default": len(without_default),
            "cards_listed": len(cards),
            "deleted_during_run": len(gone),
        },
    )


JOB = Job(
    name=NAME,
    description="Give customers with cards but no default their newest unexpired card as default.",
    run=run,
    options_model=WriteJobOptions,
    writes=True,
)
