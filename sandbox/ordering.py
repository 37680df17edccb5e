"""One int per record that orders by `created`, then by insertion, and the bounds a
`created` filter puts on it: what customer and event listings bisect."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["SEQ_BITS", "key_bounds", "sort_key"]

SEQ_BITS = 32
_NO_UPPER_BOUND = 1 << 96


def sort_key(created: int, seq: int) -> int:
    """One int orders by `created`, then by insertion: cheap to compare and to bisect."""
    return (created << SEQ_BITS) | seq


def key_bounds(created: int | Mapping[str, int] | None) -> tuple[int, int]:
    """Half-open [low, high) bounds on `key` for a `created` filter."""
    low, high = 0, _NO_UPPER_BOUND
    if created is None:
        return low, high
    if isinstance(created, int):
        return sort_key(created, 0), sort_key(created + 1, 0)
    if "gte" in created:
        low = max(low, sort_key(created["gte"], 0))
    if "gt" in created:
        low = max(low, sort_key(created["gt"] + 1, 0))
    if "lte" in created:
        high = min(high, sort_key(created["lte"] + 1, 0))
    if "lt" in created:
        high = min(high, sort_key(created["lt"], 0))
    return low, high
