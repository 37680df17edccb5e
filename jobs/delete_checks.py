"""The reads a delete makes just before it is sent, from Stripe and the user DB as they
are now, never from the run's listing (the rules they feed: reconcile.rules.deletion).

Used by dedupe and gdpr-delete. Each read costs one request (a page of 100 for the
listings); deletes are few, and a wrong one cannot be undone.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.apply import ActionDone, current_customer
from jobs.base import JobContext
from jobs.per_customer import DeletedMeanwhile, unless_deleted
from reconcile.rules.deletion import live_subscription_statuses
from reconcile.state.audit import Outcome

__all__ = ["CustomerNow", "already_deleted", "current_customer", "customer_now", "not_done"]


@dataclass(frozen=True)
class CustomerNow:
    """A customer as Stripe holds it just before its delete."""

    balance: int
    live_subscriptions: list[str]  # the status of each subscription that is not over
    payment_method_types: list[str]  # the type of each attached payment method (if read)


def customer_now(ctx: JobContext, customer_id: str, *, payment_methods: bool) -> CustomerNow | None:
    """The customer, its subscriptions in every status (`status=all`: the default listing
    leaves some out) and, with `payment_methods`, its payment methods of every type (not
    cards only); None once it is deleted, also when that happens between these reads."""
    customer = current_customer(ctx, customer_id)
    if customer is None:
        return None

    def read() -> CustomerNow:
        listed = ctx.gateway.list_subscriptions(customer_id, status="all")
        types = (
            [
                str(method.get("type") or "unknown")
                for method in ctx.gateway.list_payment_methods(customer_id, type=None)
            ]
            if payment_methods
            else []
        )
        return CustomerNow(
            balance=int(customer.get("balance") or 0),
            live_subscriptions=live_subscription_statuses(listed),
            payment_method_types=types,
        )

    found = unless_deleted(ctx.gateway, customer_id, read)
    return None if isinstance(found, DeletedMeanwhile) else found


def not_done(what: str, reasons: list[str]) -> ActionDone:
    """A planned delete (or link clearing) not carried out: `skipped`, with the reasons."""
    return ActionDone(outcome=Outcome.SKIPPED, reason=f"{what}: " + "; ".join(reasons))


def already_deleted(customer_id: str) -> ActionDone:
    """Nothing left to delete: someone (or an earlier run) deleted the customer."""
    return ActionDone(
        after={"customer_id": customer_id, "already_deleted": True},
        outcome=Outcome.UNCHANGED,
        reason=f"customer {customer_id} is already deleted",
    )
