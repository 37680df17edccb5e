"""When to retry a Stripe request and how long to wait first.

Small methods in the manner of stripe-python's HTTP client: the decision, the backoff and
the randomness are separate so tests can pin each.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "header"]

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A response header by name, whatever its case (requests' headers are case-insensitive,
    plain dicts are not)."""
    if not headers:
        return None
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Retry 429, 5xx and connection errors with jittered exponential backoff (1, 2, 4, 8 s).

    A write (POST or DELETE) is never sent again after a 5xx: Stripe keeps a 500 as the
    answer for its idempotency key for 24 hours, so the same request would only get it
    back. The write layer (`StripeGateway`) reads the object to learn whether the write
    happened, and tries again under a new key if not. A 429 never executed, and a dropped
    connection's retry is answered from the key's stored result: both are retried here.
    """

    max_retries: int = 5
    initial_delay: float = 1.0
    max_delay: float = 8.0
    # Each delay is spread over +/- this fraction so that workers hit together part ways.
    jitter: float = 0.25
    # The most a server's Retry-After is followed, so a bogus value cannot stall a run.
    max_retry_after: float = 60.0

    def should_retry(
        self,
        retries_done: int,
        status: int | None,
        headers: Mapping[str, str] | None = None,
        *,
        connection_error_retryable: bool = False,
        write: bool = False,
    ) -> bool:
        """Whether to send the request again; ``status`` is None for a connection error."""
        if retries_done >= self.max_retries:
            return False
        if status is None:
            return connection_error_retryable
        if status == 429:
            # A rate limit is not a failure: retry even if Stripe-Should-Retry says false.
            return True
        if write and status >= 500:
            return False
        should_retry = header(headers, "Stripe-Should-Retry")
        if should_retry == "true":
            return True
        if should_retry == "false":
            return False
        return status in RETRYABLE_STATUSES

    def backoff(self, retry_number: int, unit_random: float) -> float:
        """The delay before retry ``retry_number`` (1-based) for a random draw in [0, 1)."""
        nominal = min(self.initial_delay * 2.0 ** (retry_number - 1), self.max_delay)
        return nominal * (1 + self.jitter * (2 * unit_random - 1))

    def delay(
        self, retry_number: int, headers: Mapping[str, str] | None, rng: random.Random
    ) -> float:
        """The backoff, but never shorter than the server's Retry-After."""
        wait = self.backoff(retry_number, rng.random())
        retry_after = _seconds(header(headers, "Retry-After"))
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait


def _seconds(value: str | None) -> float | None:
    # Stripe sends whole seconds; an HTTP date is not worth parsing here.
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
