"""Stripe's rate limits as sliding one-second windows: per mode, per endpoint, search."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

__all__ = ["RateLimits", "SlidingWindowLimiter"]

WINDOW_SECONDS = 1.0


@dataclass
class RateLimits:
    """Requests per second; Stripe's defaults. `scaled(10)` is what benchmarks use."""

    enabled: bool = True
    test_global: float = 25
    live_global: float = 100
    per_endpoint: float = 25
    search: float = 20

    def scaled(self, factor: float) -> RateLimits:
        return replace(
            self,
            test_global=self.test_global * factor,
            live_global=self.live_global * factor,
            per_endpoint=self.per_endpoint * factor,
            search=self.search * factor,
        )

    def buckets(self, mode: str, endpoint: str, is_search: bool) -> list[tuple[str, str, float]]:
        """(reason, bucket name, limit) for every window this request counts against."""
        global_limit = self.live_global if mode == "live" else self.test_global
        found = [
            ("global-rate", f"{mode} global", global_limit),
            ("endpoint-rate", f"{mode} {endpoint}", self.per_endpoint),
        ]
        if is_search:
            found.append(("search-rate", f"{mode} search", self.search))
        return found


class SlidingWindowLimiter:
    """Admits a request only if every bucket saw fewer than its limit in the last second.

    Refused requests are not counted, so admitted ones never exceed a limit in any window.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def try_acquire(self, buckets: Sequence[tuple[str, str, float]]) -> str | None:
        """None when admitted; otherwise the reason of the first exceeded bucket."""
        now = self._clock()
        horizon = now - WINDOW_SECONDS
        with self._lock:
            windows = []
            for reason, name, limit in buckets:
                window = self._windows.setdefault(name, deque())
                while window and window[0] <= horizon:
                    window.popleft()
                if len(window) >= limit:
                    return reason
                windows.append(window)
            for window in windows:
                window.append(now)
        return None

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()
