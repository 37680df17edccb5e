"""Single-customer operations from day-to-day use: find, get-or-create, update metadata,
attach a payment method, delete.

Every write has a key derived from the data and the invocation (`intent`: the command's
own run id), so repeating a command later is a new write, never a replay of the first
(`plan=pro`, `plan=free`, `plan=pro` are three writes; get-or-create after the customer
was deleted creates a new one). Every write is announced to `audit` before it is sent: a
context manager that writes the `started` row (raising when it cannot, so nothing is
sent) and the final one.

Search is eventually consistent (it can lag writes by a minute, or an hour during
incidents), so it is the fallback, never the first look: the listing's exact `email`
filter comes first, and get-or-create relies on its per-user idempotency key, not on
search, to avoid creating a customer twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from reconcile.errors import ConfigError
from reconcile.rules.idempotency import idempotency_key
from reconcile.rules.metadata import metadata_violations
from reconcile.stripe_api.gateway import CustomerDeletion, StripeGateway

__all__ = [
    "AuditScope",
    "GetOrCreate",
    "WriteRecord",
    "attach_payment_method",
    "delete_customer",
    "find_by_email",
    "find_by_user_id",
    "get_or_create",
    "no_audit",
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
    exact = list(gateway.customers_list(email=email))
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


@dataclass
class WriteRecord:
    """One write about to be sent: what the audit log's `started` row holds; the operation
    fills `after` (and `customer_id` for a create) once it is done."""

    action: str
    customer_id: str
    idempotency_key: str
    user_id: str = ""
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    outcome: str = "applied"


AuditScope = Callable[[WriteRecord], AbstractContextManager[WriteRecord]]


@contextmanager
def no_audit(record: WriteRecord) -> Iterator[WriteRecord]:
    """For callers that keep no audit log (tests, scripts)."""
    yield record


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
    intent: str,
    audit: AuditScope = no_audit,
    metadata_key: str = "user_id",
    scope: Mapping[str, str] | None = None,
) -> GetOrCreate:
    """The user's customer: found by email (listing) and metadata user id, else by search,
    else created under this invocation's key (a retry of the request gets the same one)."""
    for customer in gateway.customers_list(email=email):
        if (customer.get("metadata") or {}).get(metadata_key) == user_id:
            return GetOrCreate(customer, created=False)
    found = find_by_user_id(gateway, user_id, metadata_key)
    if found:
        return GetOrCreate(min(found, key=lambda c: (c.get("created") or 0, c["id"])), False)
    params: dict[str, Any] = {"email": email}
    if name:
        params["name"] = name
    params["metadata"] = {**dict(scope or {}), metadata_key: user_id}
    key = idempotency_key(JOB, f"user:{user_id}", "create", params, intent=intent)
    with audit(WriteRecord("create_customer", "", key, user_id=user_id)) as record:
        created = gateway.create_customer(params, idempotency_key=key)
        record.customer_id = str(created["id"])
        record.after = {"customer_id": created["id"]}
    return GetOrCreate(created, True, key)


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
    gateway: StripeGateway,
    customer_id: str,
    changes: Mapping[str, str],
    *,
    intent: str,
    audit: AuditScope = no_audit,
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
    key = idempotency_key(
        JOB, customer_id, "update-metadata", params, state=before, intent=intent
    )
    with audit(WriteRecord("update_metadata", customer_id, key, before=before)) as record:
        updated = gateway.update_customer(customer_id, params, idempotency_key=key)
        metadata = updated.get("metadata") or {}
        record.after = {"metadata": {k: metadata.get(k) for k in changes}}
    return updated, key


def attach_payment_method(
    gateway: StripeGateway,
    customer_id: str,
    payment_method_id: str,
    *,
    intent: str,
    audit: AuditScope = no_audit,
    default: bool = False,
) -> dict[str, Any]:
    """Attach (a no-op when already attached to this customer); optionally make it default."""
    attach_params = {"customer": customer_id}
    attach_key = idempotency_key(JOB, payment_method_id, "attach", attach_params, intent=intent)
    with audit(WriteRecord("attach_payment_method", customer_id, attach_key)) as record:
        attached = gateway.attach_payment_method(
            payment_method_id, customer_id, idempotency_key=attach_key
        )
        record.after = {"payment_method": attached["id"]}
    current = gateway.retrieve_customer(customer_id)
    if not default:
        return current
    was = (current.get("invoice_settings") or {}).get("default_payment_method")
    # Test tokens (pm_card_visa) attach as a new payment method with its own id.
    params = {"invoice_settings": {"default_payment_method": str(attached["id"])}}
    before = {"default_payment_method": was}
    key = idempotency_key(JOB, customer_id, "set-default", params, state=before, intent=intent)
    with audit(WriteRecord("set_default_payment_method", customer_id, key, before=before)) as rec:
        updated = gateway.update_customer(customer_id, params, idempotency_key=key)
        rec.after = {"default_payment_method": str(attached["id"])}
    return updated


def delete_customer(
    gateway: StripeGateway, customer_id: str, *, intent: str, audit: AuditScope = no_audit
) -> CustomerDeletion:
    key = idempotency_key(JOB, customer_id, "delete", {}, intent=intent)
    with audit(WriteRecord("delete_customer", customer_id, key)) as record:
        deletion = gateway.delete_customer(customer_id, idempotency_key=key)
        record.after = {"deleted": True, "deleted_now": deletion.deleted_now}
        record.outcome = "applied" if deletion.deleted_now else "unchanged"
    return deletion
