"""Stripe's metadata limits, checked before sending: pure validation returning violations.

At most 50 keys; keys 1 to 40 characters without `[` or `]`; values strings of at most
500 characters. On update keys merge: omitted keys stay, a key set to "" is deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_KEYS",
    "MAX_KEY_LENGTH",
    "MAX_VALUE_LENGTH",
    "merged_metadata",
    "metadata_violations",
]

MAX_KEYS = 50
MAX_KEY_LENGTH = 40
MAX_VALUE_LENGTH = 500


def merged_metadata(current: Mapping[str, str], changes: Mapping[str, str]) -> dict[str, str]:
    """The metadata after an update with Stripe's merge rules."""
    merged = dict(current)
    for key, value in changes.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def metadata_violations(
    changes: Mapping[str, Any], current: Mapping[str, str] | None = None
) -> list[str]:
    """Every rule the update `changes` (applied over `current`) would break, one sentence each.

    An empty list means Stripe will accept it.
    """
    problems: list[str] = []
    for key, value in changes.items():
        if not isinstance(key, str) or not key:
            problems.append(f"metadata key {key!r} must be a non-empty string")
            continue
        if len(key) > MAX_KEY_LENGTH:
            problems.append(
                f"metadata key {key[:20]!r}... has {len(key)} characters, "
                f"more than {MAX_KEY_LENGTH}"
            )
        if "[" in key or "]" in key:
            problems.append(f"metadata key {key!r} contains '[' or ']'")
        if not isinstance(value, str):
            problems.append(f"metadata value of {key!r} is a {type(value).__name__}, not a string")
        elif len(value) > MAX_VALUE_LENGTH:
            problems.append(
                f"metadata value of {key!r} has {len(value)} characters, "
                f"more than {MAX_VALUE_LENGTH}"
            )
    if not problems:
        count = len(merged_metadata(current or {}, changes))
        if count > MAX_KEYS:
            problems.append(f"metadata would have {count} keys, more than {MAX_KEYS}")
    return problems
