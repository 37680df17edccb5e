"""One cards-frame row from a payment method or a legacy card source, without pandas.

Apart from reconcile.rules.cards so a listing's workers can build the rows as pages
arrive, before the frames' library is loaded (the listing's first request waits for
nothing heavy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["card_from_object"]


def card_from_object(
    obj: Mapping[str, Any], customer_id: str, *, is_default: bool
) -> dict[str, Any] | None:
    """One cards-frame row from a payment method (`card` inside) or a legacy card source.

    Anything that is not a card (a SEPA debit, a bank account source) gives None.
    """
    card = obj.get("card") if obj.get("object") == "payment_method" else obj
    if obj.get("object") == "payment_method" and obj.get("type", "card") != "card":
        return None
    if obj.get("object") not in ("payment_method", "card") or not isinstance(card, Mapping):
        return None
    return {
        "customer_id": customer_id,
        "payment_method_id": obj.get("id"),
        "brand": card.get("brand"),
        "last4": card.get("last4"),
        "exp_month": card.get("exp_month"),
        "exp_year": card.get("exp_year"),
        "fingerprint": card.get("fingerprint"),
        "is_default": is_default,
    }
