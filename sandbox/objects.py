"""Full Stripe-shaped JSON objects, built from compact records only when served."""

from __future__ import annotations

import hashlib
from typing import Any

from sandbox.events import EventRecord
from sandbox.store import (
    TERMINAL_SUBSCRIPTION_STATUSES,
    CustomerRecord,
    PaymentMethodRecord,
    SubscriptionRecord,
)

__all__ = [
    "API_VERSION",
    "customer_json",
    "deleted_customer_json",
    "event_json",
    "fingerprint_of",
    "payment_method_json",
    "subscription_json",
]

# The Stripe API version the sandbox answers in (its `Stripe-Version` header) and renders
# events in.
API_VERSION = "2025-03-31.basil"


def _invoice_prefix(customer_id: str) -> str:
    # Stable per customer, like Stripe's: eight upper-case hex characters.
    return hashlib.blake2s(customer_id.encode(), digest_size=4).hexdigest().upper()


def fingerprint_of(number: str) -> str:
    """The same card number always gets the same 16-character fingerprint."""
    digest = hashlib.blake2s(number.encode(), digest_size=12, person=b"sandbox").digest()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[b % 62] for b in digest)[:16].ljust(16, "0")


def customer_json(
    record: CustomerRecord,
    livemode: bool,
    default_payment_method: dict[str, Any] | str | None = None,
) -> dict[str, Any]:
    """`default_payment_method` is the id, or the expanded object when asked for."""
    return {
        "id": record.id,
        "object": "customer",
        "address": None,
        "balance": record.balance,
        "created": record.created,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": record.description,
        "discount": None,
        "email": record.email,
        "invoice_prefix": _invoice_prefix(record.id),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": default_payment_method,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": livemode,
        "metadata": dict(record.metadata),
        "name": record.name,
        "next_invoice_sequence": 1,
        "phone": record.phone,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def deleted_customer_json(record: CustomerRecord) -> dict[str, Any]:
    return {"id": record.id, "object": "customer", "deleted": True}


def payment_method_json(
    record: PaymentMethodRecord, livemode: bool, customer: dict[str, Any] | str | None = None
) -> dict[str, Any]:
    """`customer` is the id, or the expanded customer when asked for."""
    body = _card_method_json(record, livemode, customer)
    if record.type != "card":
        # A bank method carries its own type's object instead of `card`.
        del body["card"]
    if record.extra:
        body.update(record.extra)
    return body


def _card_method_json(
    record: PaymentMethodRecord, livemode: bool, customer: dict[str, Any] | str | None
) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {
            "address": {
                "city": None,
                "country": None,
                "line1": None,
                "line2": None,
                "postal_code": None,
                "state": None,
            },
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        "card": {
            "brand": record.brand,
            "checks": {
                "address_line1_check": None,
                "address_postal_code_check": None,
                "cvc_check": record.cvc_check,
            },
            "country": "US",
            "display_brand": record.brand,
            "exp_month": record.exp_month,
            "exp_year": record.exp_year,
            "fingerprint": record.fingerprint,
            "funding": record.funding,
            "generated_from": None,
            "last4": record.last4,
            "networks": {"available": [record.brand], "preferred": None},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        },
        "created": record.created,
        "customer": customer if customer is not None else record.customer,
        "livemode": livemode,
        "metadata": dict(record.metadata),
        "type": record.type,
    }


def subscription_json(record: SubscriptionRecord, livemode: bool) -> dict[str, Any]:
    items = [
        {
            "id": f"si_{record.id[4:]}{index}",
            "object": "subscription_item",
            "price": {"id": price, "object": "price"},
            "quantity": quantity,
            "subscription": record.id,
        }
        for index, (price, quantity) in enumerate(record.prices)
    ]
    ended = record.status in TERMINAL_SUBSCRIPTION_STATUSES
    return {
        "id": record.id,
        "object": "subscription",
        "cancel_at_period_end": False,
        "canceled_at": record.canceled_at,
        "created": record.created,
        "customer": record.customer,
        "ended_at": (record.canceled_at or record.created) if ended else None,
        "items": {"object": "list", "data": items, "has_more": False},
        "livemode": livemode,
        "metadata": dict(record.metadata),
        "status": record.status,
        "trial_end": record.trial_end,
        "trial_start": record.created if record.trial_end is not None else None,
    }


def event_json(event: EventRecord, livemode: bool) -> dict[str, Any]:
    """Stripe's event: `data.object` as the object was at the event (a customer.deleted
    shows the whole customer, without `deleted`), `previous_attributes` on updates only."""
    snapshot = event.snapshot
    if isinstance(snapshot, CustomerRecord):
        rendered = customer_json(snapshot, livemode, snapshot.default_payment_method)
    elif isinstance(snapshot, PaymentMethodRecord):
        rendered = payment_method_json(snapshot, livemode)
    else:
        rendered = subscription_json(snapshot, livemode)
    data: dict[str, Any] = {"object": rendered}
    if event.previous is not None:
        data["previous_attributes"] = event.previous
    return {
        "id": event.id,
        "object": "event",
        "api_version": API_VERSION,
        "created": event.created,
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 0,  # the sandbox has no webhook endpoints
        "request": {"id": event.request_id, "idempotency_key": event.idempotency_key},
        "type": event.type,
    }
