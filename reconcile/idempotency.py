"""Idempotency keys derived from the data, never random.

A key names the job, the action and the object, and ends with a hash of the canonical
parameters (and, for updates, of the state they were planned from), so:
- a retried request or a resumed run sends the same key for the same change, and Stripe
  answers with the first result instead of applying it twice;
- a different change to the same object gets a different key (Stripe refuses a key reused
  with other parameters).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["KEY_PREFIX", "MAX_KEY_LENGTH", "canonical_json", "idempotency_key"]

KEY_PREFIX = "stripe-reconcile"
MAX_KEY_LENGTH = 255
_HASH_CHARS = 24


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spaces, non-ASCII kept (hashes see the same)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(text: str, chars: int = _HASH_CHARS) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:chars]


def idempotency_key(
    job: str,
    object_id: str,
    action: str,
    params: Mapping[str, Any],
    *,
    state: Mapping[str, Any] | None = None,
) -> str:
    """`stripe-reconcile:<job>:<action>:<object id>:<hash>`, at most 255 characters.

    ``state`` is what the change was planned from (the values it replaces): the same
    parameters planned from another state are another change, with another key.
    """
    for name, value in (("job", job), ("object_id", object_id), ("action", action)):
        if not value:
            raise ValueError(f"idempotency_key needs a non-empty {name}")
    material = canonical_json({"params": params, "state": state or {}})
    key = f"{KEY_PREFIX}:{job}:{action}:{object_id}:{_digest(material)}"
    if len(key) <= MAX_KEY_LENGTH:
        return key
    # An unusually long id: keep the key unique by hashing the id too.
    head = f"{KEY_PREFIX}:{job[:40]}:{action[:40]}:"
    return f"{head}{_digest(object_id, 32)}:{_digest(material)}"
