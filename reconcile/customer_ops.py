"""Single-customer operations from day-to-day use: find, get-or-create, update metadata,
attach a payment method, delete. Every write has a key derived from the data.

Search is eventually consistent (it can lag writes by a minute, or an hour during
incidents), so it is the fallback, never the first look: the listing's exact `email`
filter comes first, and get-or-create relies on its per-user idempotency key, not on
search, to avoid creating a customer twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconcile.errors import ConfigError
from reconcile.gateway import StripeGateway
from reconcile.idempotency import idempotency_key
from reconcile.metadata_rules import metadata_violations

__all__ = [
    "GetOrCreate",
    "attach_payment_method",
    "delete_customer",
    "find_by_email",
    "find_by_user_id",
    "get_or_create",
    "parse_metadata_pairs",
    "search_string",
    "update_metadata",
]

JOB = "customer"


def search_string(value: str) -> str:
    """A value as a quoted string of Stripe's search language: `\\` and `"` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def find_by_email(gateway: StripeGateway, email: str) -> list[dict[str, Any]]:
    """The listing's exact (case-sensitive) filter first; search (case-insensitive) else."""
    exact = list(gateway.list_customers(email=email))
    if exact:
        return exact
    wanted = email.strip().casefold()
    found = gateway.search_customers(f"email:{search_string(email)}")
    # A search "match" is the words in order, not equality: keep only the same address.
    return [c for c in found if (c.get("email") or "").strip().casefold() == wanted]


def find_by_user_id(
    gateway: StripeGateway, user_id: str, metadata_key: str = "user_id"
) -> list[dict[str, Any]]:
    query = f"metadata[{search_string(metadata_key)}]:{search_string(user_id)}"
    return [
        c
        for c in gateway.search_customers(query)
        if (c.get("metadata") or {}).get(metadata_key) == user_id
    ]


@dataclass(frozen=True)
class GetOrCreate:
    customer: dict[str, Any]
    created: bool
    idempotency_key: str | None = None


def get_or_create(
    gateway: StripeGateway,
    user_id: str,
    email: str,
    name: str | None = None,
    *,
    metadata_key: str = "user_id",
    scope: Mapping[str, str] | None = None,
) -> GetOrCreate:
    """The user's customer: found by email (listing) and metadata user id, else by search,
    else created with a per-user key (a retry within 24 hours gets the same customer)."""
    for customer in gateway.list_customers(email=email):
        if (customer.get("metadata") or {}).get(metadata_key) == user_id:
            return GetOrCreate(customer, created=False)
    found = find_by_user_id(gateway, user_id, metadata_key)
    if found:
        return GetOrCreate(min(found, key=lambda c: (c.get("created") or 0, c["id"])), False)
    params: dict[str, Any] = {"email": email}
    if name:
        params["name"] = name
    params["metadata"] = {**dict(scope or {}), metadata_key: user_id}
    key = idempotency_key(JOB, f"user:{user_id}", "create", params)
    return GetOrCreate(gateway.create_customer(params, idempotency_key=key), True, key)


def parse_metadata_pairs(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`key=value` items; `key=` deletes the key. Refuses items without `=` or repeated keys."""
    changes: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{pair!r} is not key=value: write plan=pro, or plan= to delete")
        if key in changes:
            raise ConfigError(f"metadata key {key!r} is given twice: give each key once")
        changes[key] = value
    if not changes:
        raise ConfigError("no metadata given: pass one or more key=value (key= deletes)")
    return changes


def update_metadata(
    gateway: StripeGateway, customer_id: str, changes: Mapping[str, str]
) -> tuple[dict[str, Any], str]:
    """Merge `changes` into the customer's metadata after checking Stripe's limits."""
    current = dict(gateway.retrieve_customer(customer_id).get("metadata") or {})
    problems = metadata_violations(changes, current)
    if problems:
        raise ConfigError(
            f"metadata for {customer_id} breaks Stripe's limits: {'; '.join(problems)}"
        )
    params = {"metadata": dict(changes)}
    before = {"metadata": {key: current.get(key) for key in changes}}
    key = idempotency_key(JOB, customer_id, "update-metadata", params, state=before)
    return gateway.update_customer(customer_id, params, idempotency_key=key), key


def attach_payment_method(
    gateway: StripeGateway, customer_id: str, payment_method_id: str, *, default: bool = False
) -> dict[str, Any]:
    """Attach (a no-op when already attached to this customer); optionally make it default."""
    attached = gateway.attach_payment_method(
        payment_method_id,
        customer_id,
        idempotency_key=idempotency_key(
            JOB, payment_method_id, "attach", {"customer": customer_id}
        ),
    )
    current = gateway.retrieve_customer(customer_id)
    if not default:
        return current
    was = (current.get("invoice_settings") or {}).get("default_payment_method")
    # Test tokens (pm_card_visa) attach as a new payment method with its own id.
    params = {"invoice_settings": {"default_payment_method": str(attached["id"])}}
    # The state is part of the key: setting it back later is a new change, not a replay.
    key = idempotency_key(
        JOB, customer_id, "set-default", params, state={"default_payment_method": was}
    )
    return gateway.update_customer(customer_id, params, idempotency_key=key)


def delete_customer(gateway: StripeGateway, customer_id: str) -> dict[str, Any]:
    key = idempotency_key(JOB, customer_id, "delete", {})
    return gateway.delete_customer(customer_id, idempotency_key=key)
