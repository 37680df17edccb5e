"""Stripe's published rate limits, and the part of them this tool takes by default.

Settings validate against them and the limiter (reconcile.stripe_api.limiter) enforces
them; both read them here.
"""

from __future__ import annotations

import math

from reconcile.errors import ConfigError
from reconcile.mode import Mode

__all__ = [
    "DEFAULT_LIMIT_SHARE",
    "MODE_LIMITS",
    "PER_ENDPOINT_LIMIT",
    "SEARCH_LIMIT",
    "global_limit_for",
]

MODE_LIMITS: dict[Mode, float] = {Mode.TEST: 25.0, Mode.LIVE: 100.0}
PER_ENDPOINT_LIMIT = 25.0
SEARCH_LIMIT = 20.0

# This tool's part of each of Stripe's limits; the rest is left to the account's other clients.
DEFAULT_LIMIT_SHARE = 0.8


def global_limit_for(mode: Mode, max_requests_per_second: float = 0) -> float:
    """The account-wide limit to keep to: the mode's, or a lower configured one."""
    mode_limit = MODE_LIMITS[mode]
    if max_requests_per_second == 0:
        return mode_limit
    if not 0 < max_requests_per_second <= mode_limit or math.isnan(max_requests_per_second):
        raise ConfigError(
            f"[stripe] max_requests_per_second = {max_requests_per_second:g} is above Stripe's "
            f"{mode.value}-mode limit of {mode_limit:g}/s: set it to {mode_limit:g} or lower "
            "(0 means the mode's limit)"
        )
    return max_requests_per_second
