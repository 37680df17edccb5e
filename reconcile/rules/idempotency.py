"""Idempotency keys derived from the data, never random, and what a write intended.

A key names one intended write: the job, the action, the object, the intent (the id of
the listing the plan was made from, or of the `customer ...` invocation) and a hash of
the canonical parameters and of the state they replace. So:
- a retried request or a resumed run (which keeps its listing's id) sends the same key
  for the same change, and Stripe answers with the first result instead of applying it
  twice;
- a later run's write is a new intent with a new key, even when it repeats an earlier
  change (A -> B -> A over three runs, create after delete): Stripe keeps a key's answer
  for 24 hours, so a reused key would replay the old answer and the write never happen;
- a different change to the same object gets a different key (Stripe refuses a key reused
  with other parameters).

After a 5xx Stripe keeps that 500 for the key: a write tried again after one goes under
`retry_key(key, n)`, one more intent for the same change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "KEY_PREFIX",
    "MAX_KEY_LENGTH",
    "RETRY_SUFFIX_ROOM",
    "canonical_json",
    "idempotency_key",
    "rekey",
    "retry_key",
    "unmet_params",
]

KEY_PREFIX = "stripe-reconcile"
MAX_KEY_LENGTH = 255
# Room kept free for the `:r<n>` of a write tried again after a 5xx.
RETRY_SUFFIX_ROOM = 8
_HASH_CHARS = 24


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spaces, non-ASCII kept (hashes see the same)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(text: str, chars: int = _HASH_CHARS) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:chars]


def _material_digest(params: Mapping[str, Any], state: Mapping[str, Any] | None) -> str:
    return _digest(canonical_json({"params": params, "state": state or {}}))


def idempotency_key(
    job: str,
    object_id: str,
    action: str,
    params: Mapping[str, Any],
    *,
    intent: str,
    state: Mapping[str, Any] | None = None,
) -> str:
    """`stripe-reconcile:<job>:<action>:<object id>:<intent>:<hash>`, at most 247 characters.

    ``intent`` is the id of what decided this write (the listing a plan was made from, or
    the `customer ...` invocation). ``state`` is what the change was planned from (the
    values it replaces): the same parameters planned from another state are another
    change, with another key.
    """
    for name, value in (("job", job), ("object_id", object_id), ("action", action)):
        if not value:
            raise ValueError(f"idempotency_key needs a non-empty {name}")
    if not intent:
        raise ValueError("idempotency_key needs a non-empty intent (a run or listing id)")
    material = _material_digest(params, state)
    key = f"{KEY_PREFIX}:{job}:{action}:{object_id}:{intent}:{material}"
    if len(key) <= MAX_KEY_LENGTH - RETRY_SUFFIX_ROOM:
        return key
    # An unusually long id: keep the key unique by hashing the object and the intent.
    head = f"{KEY_PREFIX}:{job[:40]}:{action[:40]}:"
    return f"{head}{_digest(object_id + chr(0) + intent, 32)}:{material}"


def rekey(key: str, params: Mapping[str, Any], state: Mapping[str, Any] | None) -> str:
    """The key of the same intent re-planned from fresher state: only the hash changes."""
    head, sep, _old = key.rpartition(":")
    if not sep or not head.startswith(KEY_PREFIX + ":"):
        raise ValueError(f"not a stripe-reconcile idempotency key: {key!r}")
    return f"{head}:{_material_digest(params, state)}"


def retry_key(key: str, attempt: int) -> str:
    """The key of the `attempt`-th new try of a write whose earlier key got a 5xx."""
    if attempt < 1:
        raise ValueError(f"attempt must be at least 1, got {attempt}")
    return f"{key}:r{attempt}"


def unmet_params(obj: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """The parameters of a write that the object, read back, does not show.

    Metadata merges (a key set to "" is deleted); nested objects such as
    `invoice_settings` are compared field by field; an expanded object counts by its id.
    """
    unmet: list[str] = []
    for name, wanted in params.items():
        held = obj.get(name)
        if name == "metadata" and isinstance(wanted, Mapping):
            metadata = held if isinstance(held, Mapping) else {}
            for key, value in wanted.items():
                if (metadata.get(key) or "") != (value or ""):
                    unmet.append(f"metadata.{key}")
        elif isinstance(wanted, Mapping):
            inner = held if isinstance(held, Mapping) else {}
            unmet += [f"{name}.{item}" for item in unmet_params(inner, wanted)]
        else:
            if isinstance(held, Mapping):
                held = held.get("id")
            if (held or None) != (wanted or None):
                unmet.append(name)
    return unmet
