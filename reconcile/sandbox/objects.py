"""Full Stripe-shaped JSON objects, built from compact records only when served."""

from __future__ import annotations

import hashlib
from typing import Any

from reconcile.sandbox.store import CustomerRecord, PaymentMethodRecord

__all__ = ["customer_json", "deleted_customer_json", "fingerprint_of", "payment_method_json"]


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
