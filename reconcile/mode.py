"""Test or live mode, derived from the key's prefix, and the key shown safely."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from urllib.parse import urlsplit

from reconcile.errors import ConfigError

__all__ = ["MIN_KEY_BODY", "Mode", "is_local_api_base", "mask_key", "mode_of_key"]

# Stripe's keys carry at least this many characters after the prefix; fewer is a truncated
# or mistyped key, unless the API is a local mock.
MIN_KEY_BODY = 8
_KEY_PATTERN = re.compile(r"^(sk|rk)_(test|live)_([A-Za-z0-9]*)$")
_PREFIXES = "sk_test_..., rk_test_..., sk_live_... or rk_live_..."


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


def is_local_api_base(api_base: str | None) -> bool:
    """Whether the API base is a mock on this machine or a container beside it.

    Loopback hosts (localhost, 127.0.0.0/8, ::1) and single-label names (a docker-compose
    service such as `stripe-mock` or `sandbox`) count; Stripe and any dotted name do not.
    """
    if not api_base:
        return False
    host = (urlsplit(api_base).hostname or "").lower()
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return "." not in host


def mode_of_key(key: str, api_base: str | None = None) -> Mode:
    """The mode of a secret or restricted key; any other string is refused.

    A test key shorter than Stripe's is accepted when `api_base` is local (stripe-mock and
    the sandbox take any test key, and the README's `sk_test_123` is one).
    """
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
    masked = mask_key(stripped)
    match = _KEY_PATTERN.match(stripped)
    if match is None:
        if re.match(r"^(sk|rk)_(test|live)_", stripped):
            raise ConfigError(
                f"STRIPE_SECRET_KEY is malformed ({masked}): after its prefix a Stripe key "
                "holds only letters and digits (no spaces, quotes or line breaks): copy it "
                "again from the Stripe dashboard"
            )
        raise ConfigError(
            f"STRIPE_SECRET_KEY is malformed ({masked}): it must start with {_PREFIXES} "
            "as the Stripe dashboard shows it"
        )
    mode = Mode.LIVE if match.group(2) == "live" else Mode.TEST
    body = match.group(3)
    if not body:
        raise ConfigError(
            f"STRIPE_SECRET_KEY is malformed ({masked}): nothing follows the prefix; "
            "copy the whole key from the Stripe dashboard"
        )
    if len(body) < MIN_KEY_BODY and (mode is Mode.LIVE or not is_local_api_base(api_base)):
        mock = (
            ""
            if mode is Mode.LIVE
            else "; against stripe-mock or the sandbox set [stripe] api_base (or "
            "STRIPE_API_BASE) to its local address, e.g. http://127.0.0.1:12111, and any "
            "test key is accepted"
        )
        raise ConfigError(
            f"STRIPE_SECRET_KEY {masked} is too short for a Stripe key ({len(body)} "
            f"character(s) after the prefix, Stripe's keys have at least {MIN_KEY_BODY}): "
            f"copy the whole key from the Stripe dashboard{mock}"
        )
    if len(body) > 247:
        raise ConfigError(
            f"STRIPE_SECRET_KEY is malformed ({masked}): longer than any Stripe key; "
            "check that nothing was pasted after it"
        )
    return mode
