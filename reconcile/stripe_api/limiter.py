"""Client-side rate limiting for Stripe: a global, a per-endpoint and a search limit at once.

Each limit is a GCRA token bucket (virtual scheduling) that also keeps the instants
reserved in the future, so a request can claim one instant in *every* bucket it belongs
to, under one lock, and then sleep outside it. Reserving in all buckets at once is the
point: taking a slot from one bucket and then waiting on another would waste the first
slot, and a request parked behind a busy endpoint must not hold back the global budget
for other endpoints (future reservations are gaps other requests may fill).

Shape of a bucket for a limit of N requests a second: burst ``b`` and emission interval
``T = (1 + SAFETY) / (N - b + 1)``. A GCRA-conforming sequence holds at most
``b + floor(d / T)`` requests in any closed interval of length ``d``; with that ``T`` that
is at most ``N`` in any one-second window, and the sustained rate ``1 / T`` stays within a
few percent of ``N`` (91% at 25/s, 90% at 20/s, 94% at 100/s, 95% below 20/s).

Stripe's limits belong to the account, and other clients (the team's production app) spend
them too: ``share`` scales every limit to this tool's part of it. And Stripe's refusals
are listened to: a 429 whose ``Stripe-Rate-Limited-Reason`` names a bucket slows that
bucket (multiplied by `DECREASE`, at most once per `DECREASE_COOLDOWN`, since one
overload refuses several requests at once) and it recovers `RECOVERY_PER_SECOND` of its
rate a second, back to the share (`Slowdown`). A 429 without the header (a lock timeout)
says nothing about the rate and slows nothing.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from reconcile.errors import ConfigError
from reconcile.mode import Mode
from reconcile.rate_limits import (
    DEFAULT_LIMIT_SHARE,
    MODE_LIMITS,
    PER_ENDPOINT_LIMIT,
    SEARCH_LIMIT,
    global_limit_for,
)

__all__ = [
    "DECREASE",
    "DECREASE_COOLDOWN",
    "DEFAULT_LIMIT_SHARE",
    "GLOBAL_BUCKET",
    "MIN_FACTOR",
    "MODE_LIMITS",
    "PER_ENDPOINT_LIMIT",
    "RECOVERY_PER_SECOND",
    "SAFETY",
    "SEARCH_BUCKET",
    "SEARCH_LIMIT",
    "BucketShape",
    "GcraBucket",
    "RequestLimiter",
    "Slowdown",
    "bucket_shape",
    "buckets_named_by",
    "check_limit_share",
    "endpoint_bucket",
    "global_limit_for",
    "is_search_endpoint",
]

# Stretch of the emission interval: keeps the window bound strict despite float rounding
# and leaves room for arrival jitter on the way to the server, where a busy client (many
# threads parsing pages) sends some requests a few tens of milliseconds late; 0.05 leaves
# one request and about 70 ms a second at 25/s.
SAFETY = 0.05

# Slowing down after Stripe refuses (AIMD, as TCP does): the factor on a bucket's rate.
DECREASE = 0.7
# Refusals closer together than this are one overload (requests in flight together).
DECREASE_COOLDOWN = 1.0
# Recovery a second, as a fraction of the bucket's full rate: 0.7 -> 1.0 in 6 s.
RECOVERY_PER_SECOND = 0.05
# Never below a tenth: a run still finishes while a busy app holds the account.
MIN_FACTOR = 0.1

GLOBAL_BUCKET = "global"
SEARCH_BUCKET = "search"


@dataclass(frozen=True)
class BucketShape:
    """A GCRA bucket: at most ``burst`` at once, then one every ``interval`` seconds."""

    limit: float
    burst: int
    interval: float

    @property
    def tolerance(self) -> float:
        return (self.burst - 1) * self.interval

    @property
    def sustained_rate(self) -> float:
        return 1.0 / self.interval


def bucket_shape(
    limit: float, burst: int | None = None, *, clamp_burst: bool = False
) -> BucketShape:
    """The bucket that never lets more than ``limit`` requests into any one-second window.

    ``clamp_burst`` lowers a given burst to what the limit allows (a slowed bucket).
    """
    if not limit > 0 or math.isinf(limit):
        raise ValueError(f"a rate limit must be a positive number of requests a second: {limit}")
    per_window = max(1, math.floor(limit))
    if burst is not None and clamp_burst:
        burst = min(burst, per_window)
    if burst is None:
        # A small burst absorbs a few requests arriving together; each extra token
        # costs one request a second of sustained rate, so keep it at 2 (1 below 20/s,
        # where a second token would cost more than 10% of the limit).
        burst = 1 if per_window < 20 else max(2, per_window // 50)
    if not 1 <= burst <= per_window:
        raise ValueError(f"burst must be between 1 and {per_window} for a limit of {limit}/s")
    interval = max((1.0 + SAFETY) / (per_window - burst + 1), 1.0 / limit)
    return BucketShape(limit=limit, burst=burst, interval=interval)


class GcraBucket:
    """One limit's schedule: the GCRA state of the past plus the instants reserved ahead.

    Not thread-safe on its own; `RequestLimiter` serialises access under its lock.
    """

    def __init__(self, shape: BucketShape) -> None:
        self.shape = shape
        # Theoretical arrival time after every reservation at or before the last `advance`.
        self._tat = -math.inf
        self._ahead: list[float] = []

    def advance(self, now: float) -> None:
        """Fold reservations that are no longer in the future into the GCRA state."""
        interval = self.shape.interval
        folded = bisect.bisect_right(self._ahead, now)
        for instant in self._ahead[:folded]:
            self._tat = max(self._tat, instant) + interval
        del self._ahead[:folded]

    def earliest(self, not_before: float) -> float:
        """The earliest instant at or after ``not_before`` at which one more request conforms.

        The new instant may fall between reservations already made, as long as every
        reservation after it still conforms (see the module docstring for the bound).
        """
        interval, tolerance = self.shape.interval, self.shape.tolerance
        ahead = self._ahead
        count = len(ahead)
        # limit_after[p]: the largest GCRA state with which ahead[p:] would still conform.
        limit_after = [math.inf] * (count + 1)
        for p in range(count - 1, -1, -1):
            limit_after[p] = min(ahead[p] + tolerance, limit_after[p + 1] - interval)
        tat = self._tat
        for p in range(count + 1):
            if p > 0:
                tat = max(tat, ahead[p - 1]) + interval
            ceiling = limit_after[p] - interval
            if tat > ceiling:
                continue
            low = max(not_before, tat - tolerance)
            if p > 0:
                low = max(low, ahead[p - 1])
            high = min(ceiling, ahead[p]) if p < count else ceiling
            if low <= high:
                return low
        raise AssertionError("unreachable: the instant after every reservation always conforms")

    def commit(self, instant: float) -> None:
        bisect.insort(self._ahead, instant)

    @property
    def reserved_ahead(self) -> int:
        """Reservations not yet due (as of the last `advance`)."""
        return len(self._ahead)


@dataclass(frozen=True)
class Slowdown:
    """A bucket slowed by Stripe's refusals: ``factor`` of its rate at ``since`` (the last
    decrease), recovering `RECOVERY_PER_SECOND` a second from then."""

    factor: float
    since: float

    def factor_at(self, now: float) -> float:
        return min(1.0, self.factor + RECOVERY_PER_SECOND * max(0.0, now - self.since))

    @staticmethod
    def after_refusal(current: Slowdown | None, now: float) -> Slowdown:
        """The slowdown once Stripe refused at ``now``: one decrease per cooldown."""
        if current is None:
            return Slowdown(max(MIN_FACTOR, DECREASE), now)
        if now - current.since < DECREASE_COOLDOWN:
            return current
        return Slowdown(max(MIN_FACTOR, current.factor_at(now) * DECREASE), now)


def endpoint_bucket(endpoint: str) -> str:
    return f"endpoint:{endpoint}"


def buckets_named_by(reason: str | None, endpoint: str) -> tuple[str, ...]:
    """The buckets a 429's ``Stripe-Rate-Limited-Reason`` names for a request to ``endpoint``.

    ``global-rate``/``global-concurrency``: the account's; ``endpoint-*``: the endpoint's,
    and for a search the search limit too (Stripe reports that one as an endpoint's);
    ``search-*``: the search limit. Nothing for anything else: no header (a lock timeout),
    ``resource-specific`` (one object is busy, not the account).
    """
    if not reason:
        return ()
    kind = reason.strip().lower().split("-", 1)[0]
    search = is_search_endpoint(endpoint)
    if kind == "global":
        return (GLOBAL_BUCKET,)
    if kind == "endpoint":
        own = endpoint_bucket(endpoint)
        return (own, SEARCH_BUCKET) if search else (own,)
    if kind == "search" and search:
        return (SEARCH_BUCKET,)
    return ()


def check_limit_share(share: float) -> float:
    if not 0 < share <= 1.0 or math.isnan(share):
        raise ConfigError(
            f"[stripe] limit_share = {share:g} is not a share of Stripe's limits: set it above "
            "0 and at most 1.0 (0.8 leaves a fifth of each limit to the account's other clients)"
        )
    return share


def is_search_endpoint(endpoint: str) -> bool:
    """Search endpoints (``GET /v1/customers/search`` and the like) share the search limit."""
    return endpoint.endswith("/search")


class RequestLimiter:
    """Waits until a request may start under every limit it belongs to; shared by all threads.

    ``endpoint`` is the method and path template, e.g. ``"GET /v1/customers/{id}"``.
    """

    def __init__(
        self,
        global_limit: float,
        *,
        per_endpoint_limit: float = PER_ENDPOINT_LIMIT,
        search_limit: float = SEARCH_LIMIT,
        burst: int | None = None,
        share: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.share = check_limit_share(share)
        # The limits this tool keeps to: its share of each.
        self.global_limit = global_limit * share
        self.per_endpoint_limit = per_endpoint_limit * share
        self.search_limit = search_limit * share
        self._burst = burst
        self._global = GcraBucket(bucket_shape(self.global_limit, burst))
        self._endpoint_shape = bucket_shape(self.per_endpoint_limit)
        self._endpoints: dict[str, GcraBucket] = {}
        self._search = GcraBucket(bucket_shape(self.search_limit))
        # Buckets slowed by Stripe's refusals; empty (the usual case) costs nothing.
        self._slowdowns: dict[str, Slowdown] = {}
        # How late a send may be before it must take a new slot. Sends each at most L
        # after its reserved instant put the reservations of a span of 1 + L seconds into
        # one second; with T = (1 + SAFETY) / (N - b + 1) those are at most N while
        # L < SAFETY. Half of it goes to waking late, half is left for the way to the
        # server. A tolerance tied to the interval instead would be a few milliseconds at
        # high rates, which a busy interpreter often misses, and every miss takes a slot.
        self._late_tolerance = SAFETY / 2
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # Wakes too late to send (each one took a fresh slot): a sign of a busy CPU.
        self.late_wakes = 0

    @classmethod
    def for_mode(
        cls,
        mode: Mode,
        max_requests_per_second: float = 0,
        *,
        share: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> RequestLimiter:
        """The limiter for a key's mode; 0 means the mode's own limit, and only lower is allowed.

        ``share`` of every limit (global, per endpoint, search) is this tool's.
        """
        return cls(
            global_limit_for(mode, max_requests_per_second), share=share, clock=clock, sleep=sleep
        )

    def reserve(self, endpoint: str) -> float:
        """Claim the earliest instant at which ``endpoint`` may be requested; does not wait."""
        with self._lock:
            now = self._clock()
            if self._slowdowns:
                self._apply_slowdowns(now)
            buckets = self._buckets_of(endpoint)
            for bucket in buckets:
                bucket.advance(now)
            instant = now
            while True:
                latest = max(bucket.earliest(instant) for bucket in buckets)
                if latest == instant:
                    break
                instant = latest
            for bucket in buckets:
                bucket.commit(instant)
            return instant

    def acquire(self, endpoint: str) -> float:
        """Wait until ``endpoint`` may be requested; returns the seconds waited.

        A thread that wakes well after its instant (a busy CPU) takes a fresh slot instead
        of sending late: a late send lands in the same second as the requests reserved
        after it, and the server counts arrivals, not reservations.
        """
        waited = 0.0
        while True:
            instant = self.reserve(endpoint)
            wait = instant - self._clock()
            if wait > 0:
                self._sleep(wait)
                waited += wait
            if self._clock() - instant <= self._late_tolerance:
                return waited
            self.late_wakes += 1

    def waiting(self, endpoint: str) -> int:
        """Requests for ``endpoint`` (or sharing a limit with it) holding a reservation that
        is not due yet: above zero, the limiter, not the workers, sets the pace."""
        with self._lock:
            now = self._clock()
            buckets = self._buckets_of(endpoint)
            for bucket in buckets:
                bucket.advance(now)
            return max(bucket.reserved_ahead for bucket in buckets)

    def rate_limited(self, endpoint: str, reason: str | None) -> tuple[str, ...]:
        """Stripe refused a request to ``endpoint`` with a 429 giving ``reason`` (its
        ``Stripe-Rate-Limited-Reason``): slow the buckets it names, and return them."""
        names = buckets_named_by(reason, endpoint)
        if names:
            with self._lock:
                now = self._clock()
                for name in names:
                    self._slowdowns[name] = Slowdown.after_refusal(self._slowdowns.get(name), now)
                self._apply_slowdowns(now)
        return names

    def rate_factor(self, bucket: str) -> float:
        """The share of its configured rate a bucket runs at now (1.0 unless slowed)."""
        with self._lock:
            slowdown = self._slowdowns.get(bucket)
            return 1.0 if slowdown is None else slowdown.factor_at(self._clock())

    def _apply_slowdowns(self, now: float) -> None:
        for name, slowdown in list(self._slowdowns.items()):
            factor = slowdown.factor_at(now)
            if factor >= 1.0:
                del self._slowdowns[name]
            self._reshape(name, factor)

    def _reshape(self, name: str, factor: float) -> None:
        if name == GLOBAL_BUCKET:
            bucket, limit, burst = self._global, self.global_limit, self._burst
        elif name == SEARCH_BUCKET:
            bucket, limit, burst = self._search, self.search_limit, None
        else:
            endpoint = name.removeprefix("endpoint:")
            found = self._endpoints.get(endpoint)
            if found is None:
                found = self._endpoints[endpoint] = GcraBucket(self._endpoint_shape)
            bucket, limit, burst = found, self.per_endpoint_limit, None
        bucket.shape = bucket_shape(limit * min(factor, 1.0), burst, clamp_burst=True)

    def _buckets_of(self, endpoint: str) -> list[GcraBucket]:
        bucket = self._endpoints.get(endpoint)
        if bucket is None:
            bucket = self._endpoints[endpoint] = GcraBucket(self._endpoint_shape)
        buckets = [self._global, bucket]
        if is_search_endpoint(endpoint):
            buckets.append(self._search)
        return buckets
