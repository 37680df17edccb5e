"""The sandbox's time: a base time source shifted by a settable offset.

Stripe keeps an idempotency key's result for 24 hours; tests and the admin route move this
clock forward instead of waiting. New objects take their `created` from it too, so the
sandbox's world stays consistent with itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["SandboxClock"]


class SandboxClock:
    """Callable like `time.time`: `base()` plus an offset that `advance` and `set` move."""

    def __init__(self, base: Callable[[], float] = time.time) -> None:
        self._base = base
        self._offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._base() + self._offset

    def now(self) -> float:
        return self()

    def advance(self, seconds: float) -> float:
        """Move the clock forward (or back, with a negative value); returns the new time."""
        with self._lock:
            self._offset += float(seconds)
        return self()

    def set(self, now: float) -> float:
        """Make the clock read `now` (epoch seconds); it keeps ticking with its base."""
        with self._lock:
            self._offset = float(now) - self._base()
        return self()

    def reset(self) -> None:
        """Back to the base time source, offset zero."""
        with self._lock:
            self._offset = 0.0

    @property
    def offset(self) -> float:
        return self._offset
