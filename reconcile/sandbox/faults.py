"""Injected failures: random 500s, 429s and dropped connections, and scripted ones."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

__all__ = ["DROP", "Fault", "FaultInjector"]

DROP = 0  # the status of a fault that closes the connection without a response


@dataclass(frozen=True, slots=True)
class Fault:
    status: int  # DROP, or the HTTP status to answer with

    @property
    def drops(self) -> bool:
        return self.status == DROP


@dataclass
class _Scripted:
    method: str
    path: str
    remaining: int
    status: int


class FaultInjector:
    """Probabilities are plain attributes, settable at runtime; `fail_next` is exact."""

    def __init__(
        self,
        error_rate: float = 0.0,
        rate_limit_rate: float = 0.0,
        drop_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.error_rate = error_rate
        self.rate_limit_rate = rate_limit_rate
        self.drop_rate = drop_rate
        self._random = random.Random(seed)
        self._scripted: list[_Scripted] = []
        self._lock = threading.Lock()

    def fail_next(self, method: str, path: str, count: int, status: int = 500) -> None:
        """The next `count` requests to `path` (exact, or a template such as
        `/v1/customers/{id}`) fail with `status`; status 0 (DROP) closes the connection."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        with self._lock:
            self._scripted.append(_Scripted(method.upper(), path, count, status))

    def drop_next(self, method: str, path: str, count: int) -> None:
        self.fail_next(method, path, count, status=DROP)

    def clear(self) -> None:
        with self._lock:
            self._scripted.clear()
        self.error_rate = self.rate_limit_rate = self.drop_rate = 0.0

    def decide(self, method: str, path: str, template: str) -> Fault | None:
        with self._lock:
            for scripted in self._scripted:
                if scripted.method == method and scripted.path in (path, template):
                    scripted.remaining -= 1
                    if scripted.remaining == 0:
                        self._scripted.remove(scripted)
                    return Fault(scripted.status)
            draw = self._random.random()
        if draw < self.drop_rate:
            return Fault(DROP)
        if draw < self.drop_rate + self.error_rate:
            return Fault(500)
        if draw < self.drop_rate + self.error_rate + self.rate_limit_rate:
            return Fault(429)
        return None
