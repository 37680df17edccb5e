"""Injected failures: random 500s, 429s and dropped connections, and scripted ones.

A fault strikes either before the request executes (a load balancer's error: nothing
changes, nothing is stored for an idempotency key) or, with `after_apply`, once the request
has executed (the write took effect, the client never learns it): a 5xx is then what Stripe
stores for the key, a dropped connection leaves the real result stored.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

__all__ = ["DROP", "Fault", "FaultInjector"]

DROP = 0  # the status of a fault that closes the connection without a response


@dataclass(frozen=True, slots=True)
class Fault:
    status: int  # DROP, or the HTTP status to answer with
    after_apply: bool = False  # True: the request executes first, then fails

    @property
    def drops(self) -> bool:
        return self.status == DROP


@dataclass
class _Scripted:
    method: str
    path: str
    remaining: int
    status: int
    after_apply: bool


class FaultInjector:
    """Probabilities are plain attributes, settable at runtime; `fail_next` is exact."""

    def __init__(
        self,
        error_rate: float = 0.0,
        rate_limit_rate: float = 0.0,
        drop_rate: float = 0.0,
        seed: int | None = None,
        after_apply_share: float = 0.0,
    ) -> None:
        self.error_rate = error_rate
        self.rate_limit_rate = rate_limit_rate
        self.drop_rate = drop_rate
        # The share of random 500s and drops that strike after the request executed.
        self.after_apply_share = after_apply_share
        # The limiter an injected 429 names in Stripe-Rate-Limited-Reason ("" = none).
        self.rate_limit_reason = "global-rate"
        self._random = random.Random(seed)
        self._scripted: list[_Scripted] = []
        self._lock = threading.Lock()

    def fail_next(
        self,
        method: str,
        path: str,
        count: int,
        status: int = 500,
        after_apply: bool = False,
    ) -> None:
        """The next `count` requests to `path` (exact, or a template such as
        `/v1/customers/{id}`) fail with `status`; status 0 (DROP) closes the connection.

        By default they fail before executing. With `after_apply=True` each executes first
        (the customer really changes or is deleted) and is then answered with `status`
        (500 to 599) or, with 0, a dropped connection."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        if not isinstance(after_apply, bool):
            raise ValueError(f"after_apply must be true or false, got {after_apply!r}")
        if after_apply and status != DROP and not 500 <= status <= 599:
            raise ValueError(
                f"an after_apply fault answers 500 to 599 or drops the connection (0), "
                f"got status {status}"
            )
        with self._lock:
            self._scripted.append(_Scripted(method.upper(), path, count, status, after_apply))

    def drop_next(self, method: str, path: str, count: int, after_apply: bool = False) -> None:
        self.fail_next(method, path, count, status=DROP, after_apply=after_apply)

    def clear(self) -> None:
        with self._lock:
            self._scripted.clear()
        self.error_rate = self.rate_limit_rate = self.drop_rate = 0.0
        self.after_apply_share = 0.0

    def decide(self, method: str, path: str, template: str) -> Fault | None:
        with self._lock:
            for scripted in self._scripted:
                if scripted.method == method and scripted.path in (path, template):
                    scripted.remaining -= 1
                    if scripted.remaining == 0:
                        self._scripted.remove(scripted)
                    return Fault(scripted.status, scripted.after_apply)
            draw = self._random.random()
            # Drawn only when asked for, so seeded runs without it keep their sequence.
            after = self.after_apply_share > 0 and self._random.random() < self.after_apply_share
        if draw < self.drop_rate:
            return Fault(DROP, after)
        if draw < self.drop_rate + self.error_rate:
            return Fault(500, after)
        if draw < self.drop_rate + self.error_rate + self.rate_limit_rate:
            return Fault(429)
        return None
