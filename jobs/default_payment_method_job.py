"""default-payment-method: customers with cards but no default get their newest valid card."""

from __future__ import annotations

from typing import Any

import pandas as pd

from jobs.apply import ActionDone, PlannedAction, carry_out
from jobs.base import Job, JobContext, JobResult
from jobs.maintenance_snapshot import read_snapshot
from jobs.per_customer import scan_customers, scan_workers
from jobs.reconcile_job import compare_config
from reconcile.compare import in_scope
from reconcile.plans import ACTION_SET_DEFAULT_PM, plan_default_payment_method

__all__ = ["JOB", "set_default"]

NAME = "default-payment-method"
CARD_COLUMNS = ["customer_id", "payment_method_id", "created", "exp_month", "exp_year"]


def set_default(ctx: JobContext, action: PlannedAction) -> ActionDone:
    updated = ctx.gateway.update_customer(
        action.customer_id, action.params, idempotency_key=action.idempotency_key
    )
    default = (updated.get("invoice_settings") or {}).get("default_payment_method")
    if isinstance(default, dict):
        default = default.get("id")
    return ActionDone(after={"default_payment_method": default})


def run(ctx: JobContext) -> JobResult:
    snapshot = read_snapshot(ctx, NAME)
    customers = snapshot.customers[
        in_scope(snapshot.customers, snapshot.users, compare_config(ctx.settings.userdb)).to_numpy()
    ]
    without_default = customers[customers["default_payment_method"].isna().to_numpy()]

    # No listing spans customers: one call per customer without a default, concurrently.
    def cards_of(customer_id: str) -> list[dict[str, Any]]:
        cards = []
        for method in ctx.gateway.list_payment_methods(customer_id):
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
    cards = [card for found in per_customer for card in found]
    plan = plan_default_payment_method(
        customers, pd.DataFrame.from_records(cards, columns=CARD_COLUMNS), ctx.today, job=NAME
    )
    return carry_out(
        ctx,
        NAME,
        plan,
        {ACTION_SET_DEFAULT_PM: set_default},
        facts={
            **snapshot.facts(),
            "customers_without_default": len(without_default),
            "cards_listed": len(cards),
        },
    )


JOB = Job(
    name=NAME,
    description="Give customers with cards but no default their newest unexpired card as default.",
    run=run,
    writes=True,
)
