"""What must hold just before a customer is deleted: pure rules over fresh reads, no I/O.

A delete is irreversible and cancels the customer's subscriptions at once, so the jobs
that delete (dedupe, gdpr-delete) read the customer, its subscriptions and payment
methods and the users that link to it again just before the DELETE (jobs.delete_checks),
never from the run's listing, and hand what they read to these rules. Each rule returns
the reasons the delete must not happen, as sentences a person reads in the audit log;
no reason means the delete may go.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TERMINAL_SUBSCRIPTION_STATUSES",
    "LinkedUser",
    "dedupe_delete_blockers",
    "gdpr_delete_blockers",
    "gdpr_link_blockers",
    "live_subscription_statuses",
]

# A subscription in any other status (active, trialing, past_due, unpaid, incomplete,
# paused, ...) still bills or may bill again: deleting its customer cancels it at once.
TERMINAL_SUBSCRIPTION_STATUSES = frozenset({"canceled", "incomplete_expired"})


@dataclass(frozen=True)
class LinkedUser:
    """A user whose customer id column holds a given customer, as read just now."""

    user_id: str
    deleted: bool  # soft-deleted ([userdb] deleted_column); False without that column


def live_subscription_statuses(subscriptions: Iterable[Mapping[str, Any]]) -> list[str]:
    """The status of each subscription that is not over (statuses unknown today included)."""
    return [
        str(subscription.get("status") or "unknown")
        for subscription in subscriptions
        if str(subscription.get("status")) not in TERMINAL_SUBSCRIPTION_STATUSES
    ]


def _counted(items: Sequence[str], what: str) -> str:
    kinds = ", ".join(sorted(set(items)))
    return f"{len(items)} {what}(s) ({kinds})"


def dedupe_delete_blockers(
    *,
    linked_users: Sequence[LinkedUser],
    live_subscriptions: Sequence[str],
    payment_method_types: Sequence[str],
    balance: int,
) -> list[str]:
    """Why a duplicate must stay: the README promises a deleted duplicate is not linked
    in the user DB, has no subscription that is not over, no payment method of any type
    and a zero balance."""
    reasons = []
    if linked_users:
        ids = ", ".join(user.user_id for user in linked_users)
        reasons.append(f"linked in the user DB now (user {ids})")
    if live_subscriptions:
        reasons.append(_counted(live_subscriptions, "subscription") + " not canceled")
    if payment_method_types:
        reasons.append(_counted(payment_method_types, "payment method"))
    if balance:
        reasons.append(f"balance {balance}")
    return reasons


def gdpr_link_blockers(user_id: str, linked_users: Sequence[LinkedUser]) -> list[str]:
    """Why the planned user's link must stay: it must still hold the customer and still
    be soft-deleted (a user restored since the plan is a customer again)."""
    mine = [user for user in linked_users if user.user_id == user_id]
    if not mine:
        return [f"user {user_id} no longer links to this customer"]
    if not mine[0].deleted:
        return [f"user {user_id} is no longer soft-deleted (restored since the plan)"]
    return []


def gdpr_delete_blockers(
    user_id: str, linked_users: Sequence[LinkedUser], live_subscriptions: Sequence[str]
) -> list[str]:
    """Why a soft-deleted user's customer must not be deleted now: the user's link fails
    `gdpr_link_blockers`, a user who is not deleted links to the customer, or it has
    subscriptions that are not over (deleting would cancel them at once: a billing
    decision for a person)."""
    reasons = gdpr_link_blockers(user_id, linked_users)
    active = [user.user_id for user in linked_users if not user.deleted and user.user_id != user_id]
    if active:
        reasons.append(f"user(s) who are not deleted link to this customer ({', '.join(active)})")
    if live_subscriptions:
        reasons.append(
            _counted(live_subscriptions, "subscription")
            + " not canceled: deleting the customer would cancel them at once; cancel them "
            "(or keep the customer) first"
        )
    return reasons
