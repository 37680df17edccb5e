"""One rate limiter per Stripe account and mode, shared by every run in the process.

Stripe's limits are the account's: two runs with limiters of their own (``serve`` with
two jobs due together) would each spend the whole budget and fight over it with 429s.
Every gateway of a process therefore takes its limiter from here, keyed by the account,
the mode and the limits; with ``limiter_url`` the limiter keeps its schedule in Redis,
shared by every process and pod of the account.

The account is named by a hash of the API base and the key (never the key itself), or by
the caller. Two keys of one account (a secret and a restricted key) hash differently: give
them the same ``account`` to share one budget.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

from reconcile.mode import Mode, mode_of_key
from reconcile.stripe_api.limiter import (
    DEFAULT_LIMIT_SHARE,
    RequestLimiter,
    check_limit_share,
    global_limit_for,
)

__all__ = ["LimiterKey", "account_of", "clear_shared_limiters", "shared_limiter"]

DEFAULT_API_BASE = "https://api.stripe.com"


@dataclass(frozen=True)
class LimiterKey:
    account: str
    mode: Mode
    global_limit: float
    share: float
    limiter_url: str | None


_limiters: dict[LimiterKey, RequestLimiter] = {}
_lock = threading.Lock()


def account_of(api_key: str, api_base: str | None = None) -> str:
    """A stable name for the account behind a key (a hash: the key never leaves)."""
    base = (api_base or DEFAULT_API_BASE).rstrip("/")
    digest = hashlib.sha256(f"{base}\n{api_key.strip()}".encode()).hexdigest()
    return digest[:20]


def shared_limiter(
    api_key: str,
    *,
    api_base: str | None = None,
    max_requests_per_second: float = 0,
    share: float = DEFAULT_LIMIT_SHARE,
    limiter_url: str | None = None,
    account: str | None = None,
) -> RequestLimiter:
    """The process's limiter for this account, mode and limits; made on first use.

    With ``limiter_url`` it is a `RedisRequestLimiter` (Redis reached now, or
    `LimiterUnavailableError`: exit 3).
    """
    mode = mode_of_key(api_key, api_base)
    key = LimiterKey(
        account=account or account_of(api_key, api_base),
        mode=mode,
        global_limit=global_limit_for(mode, max_requests_per_second),
        share=check_limit_share(share),
        limiter_url=limiter_url or None,
    )
    with _lock:
        limiter = _limiters.get(key)
        if limiter is None:
            limiter = _limiters[key] = _new_limiter(key)
        return limiter


def clear_shared_limiters() -> None:
    """Forget every limiter (tests that need a fresh schedule)."""
    with _lock:
        _limiters.clear()


def _new_limiter(key: LimiterKey) -> RequestLimiter:
    if key.limiter_url is None:
        return RequestLimiter(key.global_limit, share=key.share)
    # Imported here: redis costs start-up time and most installations never use it.
    from reconcile.stripe_api.limiter_redis import RedisRequestLimiter, connect

    # Processes with other limits or shares keep to theirs, but share the same buckets:
    # the budget is the account's.
    return RedisRequestLimiter(
        connect(key.limiter_url),
        f"{key.account}:{key.mode.value}",
        key.global_limit,
        share=key.share,
    )
