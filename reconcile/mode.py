"""Test or live mode, derived from the key's prefix, and the key shown safely."""

from __future__ import annotations

import re
from enum import StrEnum

from reconcile.errors import ConfigError

__all__ = ["Mode", "mask_key", "mode_of_key"]

_KEY_PATTERN = re.compile(r"^(sk|rk)_(test|live)_[A-Za-z0-9]{8,247}$")


class Mode(StrEnum):
    TEST = "test"
    LIVE = "live"

    @property
    def livemode(self) -> bool:
        return self is Mode.LIVE

    @property
    def other(self) -> Mode:
        return Mode.TEST if self is Mode.LIVE else Mode.LIVE


def mask_key(key: str) -> str:
    """`sk_live_...abcd`: the prefix and the last four characters, never more."""
    match = re.match(r"^((?:sk|rk|pk)_(?:test|live)_)", key)
    prefix = match.group(1) if match else ""
    tail = key[-4:] if len(key) >= len(prefix) + 12 else ""
    return f"{prefix}...{tail}" if prefix else "(a key without a known prefix)"


def mode_of_key(key: str) -> Mode:
    """The mode of a secret or restricted key; any other string is refused."""
    stripped = key.strip()
    if not stripped:
        raise ConfigError(
            "STRIPE_SECRET_KEY is empty: set it to a secret (sk_test_/sk_live_) "
            "or restricted (rk_test_/rk_live_) key"
        )
    if stripped.startswith(("pk_test_", "pk_live_")):
        raise ConfigError(
            f"STRIPE_SECRET_KEY is a publishable key ({mask_key(stripped)}): "
            "use a secret (sk_) or restricted (rk_) key"
        )
    match = _KEY_PATTERN.match(stripped)
    if match is None:
        raise ConfigError(
            f"STRIPE_SECRET_KEY is malformed ({mask_key(stripped)}): expected "
            "sk_test_..., rk_test_..., sk_live_... or rk_live_... from the Stripe dashboard"
        )
    return Mode.LIVE if match.group(2) == "live" else Mode.TEST
