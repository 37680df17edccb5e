"""The rate limiter shared by every process and pod of an account: the reservation in Redis.

The same GCRA reservation as `reconcile.stripe_api.limiter.RequestLimiter` (its docstring has the
reasoning and the window bound), done by one Lua script so that it is atomic across
processes: the global, the endpoint's and (for a search) the search bucket are read, the
earliest instant that conforms in all of them is found, and it is reserved in each, in
one step. Redis's ``TIME`` is the clock, so pods with skewed clocks agree; the script
answers how long to wait, which each process counts on its own monotonic clock.

Per bucket, under ``stripe-reconcile:limiter:{<account>}:<bucket>``: a hash with the GCRA
state (``tat``) and the slowdown after Stripe's refusals (``f`` at ``fs``), and a sorted
set of the instants reserved ahead. Keys expire a minute after their last use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from reconcile.errors import EXIT_STRIPE, ReconcileError
from reconcile.stripe_api.limiter import (
    DECREASE,
    DECREASE_COOLDOWN,
    GLOBAL_BUCKET,
    MIN_FACTOR,
    PER_ENDPOINT_LIMIT,
    RECOVERY_PER_SECOND,
    SAFETY,
    SEARCH_BUCKET,
    SEARCH_LIMIT,
    RequestLimiter,
    buckets_named_by,
    endpoint_bucket,
    is_search_endpoint,
)

__all__ = ["LimiterUnavailableError", "RedisRequestLimiter", "connect", "redacted_url"]

# Idle keys go after this long: the GCRA state of a minute ago no longer limits anything,
# and a slowdown has recovered by then (from MIN_FACTOR in 18 s).
KEY_TTL_MS = 60_000
CONNECT_TIMEOUT_SECONDS = 5.0

_NOW = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
"""

# KEYS: per bucket its state hash and its set of reservations ahead, in pairs; then the
# sequence key that makes members unique. ARGV: SAFETY, RECOVERY_PER_SECOND, KEY_TTL_MS,
# then per bucket its limit (requests a second) and burst (0: the default for the limit).
# Returns the reserved instant on Redis's clock and the seconds from its now to it, as
# text (Lua numbers would come back as integers).
_RESERVE = (
    _NOW
    + """
local safety, recovery, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local count = (#KEYS - 1) / 2

local function shape(limit, burst)
  local per_window = math.max(1, math.floor(limit))
  if burst <= 0 then
    if per_window < 20 then burst = 1 else burst = math.max(2, math.floor(per_window / 50)) end
  end
  burst = math.min(burst, per_window)
  local interval = math.max((1 + safety) / (per_window - burst + 1), 1 / limit)
  return interval, (burst - 1) * interval
end

local function earliest(b, not_before)
  local ahead, interval, tolerance = b.ahead, b.interval, b.tolerance
  local n = #ahead
  local limit_after = {}
  limit_after[n + 1] = math.huge
  for q = n, 1, -1 do
    limit_after[q] = math.min(ahead[q] + tolerance, limit_after[q + 1] - interval)
  end
  local tat = b.tat
  for p = 0, n do
    if p > 0 then tat = math.max(tat, ahead[p]) + interval end
    local ceiling = limit_after[p + 1] - interval
    if tat <= ceiling then
      local low = math.max(not_before, tat - tolerance)
      if p > 0 then low = math.max(low, ahead[p]) end
      local high = ceiling
      if p < n then high = math.min(ceiling, ahead[p + 1]) end
      if low <= high then return low end
    end
  end
  error('unreachable: the instant after every reservation always conforms')
end

local buckets = {}
local now_text = string.format('%.6f', now)
for i = 1, count do
  local state, ahead_key = KEYS[2 * i - 1], KEYS[2 * i]
  local limit, burst = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  local fields = redis.call('HMGET', state, 'tat', 'f', 'fs')
  local factor = 1
  if fields[2] then
    factor = math.min(1, tonumber(fields[2]) + recovery * math.max(0, now - tonumber(fields[3])))
  end
  local interval, tolerance = shape(limit * factor, burst)
  local tat = -math.huge
  if fields[1] then tat = tonumber(fields[1]) end
  local due = redis.call('ZRANGEBYSCORE', ahead_key, '-inf', now_text, 'WITHSCORES')
  for j = 2, #due, 2 do tat = math.max(tat, tonumber(due[j])) + interval end
  if #due > 0 then redis.call('ZREMRANGEBYSCORE', ahead_key, '-inf', now_text) end
  local rest = redis.call('ZRANGE', ahead_key, 0, -1, 'WITHSCORES')
  local ahead = {}
  for j = 2, #rest, 2 do ahead[#ahead + 1] = tonumber(rest[j]) end
  buckets[i] = {state = state, ahead_key = ahead_key, interval = interval,
                tolerance = tolerance, tat = tat, ahead = ahead}
end

local instant = now
for _ = 1, 10000 do
  local latest = instant
  for i = 1, count do
    local candidate = earliest(buckets[i], instant)
    if candidate > latest then latest = candidate end
  end
  if latest == instant then break end
  instant = latest
end

local sequence_key = KEYS[#KEYS]
local member = string.format('%.6f', instant) .. ':' .. redis.call('INCR', sequence_key)
local expire = ttl + math.ceil((instant - now) * 1000)
for i = 1, count do
  local b = buckets[i]
  redis.call('ZADD', b.ahead_key, string.format('%.17g', instant), member)
  if b.tat ~= -math.huge then
    redis.call('HSET', b.state, 'tat', string.format('%.17g', b.tat))
  end
  redis.call('PEXPIRE', b.state, expire)
  redis.call('PEXPIRE', b.ahead_key, expire)
end
redis.call('PEXPIRE', sequence_key, expire)
return {string.format('%.6f', instant), string.format('%.6f', instant - now)}
"""
)

# KEYS[1]: a bucket's state hash. ARGV: DECREASE, DECREASE_COOLDOWN, RECOVERY_PER_SECOND,
# MIN_FACTOR, KEY_TTL_MS. `reconcile.stripe_api.limiter.Slowdown.after_refusal`, in Redis.
_REFUSED = (
    _NOW
    + """
local decrease, cooldown = tonumber(ARGV[1]), tonumber(ARGV[2])
local recovery, floor, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local fields = redis.call('HMGET', KEYS[1], 'f', 'fs')
local factor = math.max(floor, decrease)
if fields[1] then
  local since = tonumber(fields[2])
  if now - since < cooldown then return fields[1] end
  local current = math.min(1, tonumber(fields[1]) + recovery * math.max(0, now - since))
  factor = math.max(floor, current * decrease)
end
redis.call('HSET', KEYS[1], 'f', string.format('%.6f', factor), 'fs', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], ttl)
return string.format('%.6f', factor)
"""
)

# KEYS[1]: a bucket's state hash. ARGV[1]: RECOVERY_PER_SECOND. The factor now.
_FACTOR = (
    _NOW
    + """
local fields = redis.call('HMGET', KEYS[1], 'f', 'fs')
if not fields[1] then return '1' end
local recovery = tonumber(ARGV[1])
local factor = tonumber(fields[1]) + recovery * math.max(0, now - tonumber(fields[2]))
return string.format('%.6f', math.min(1, factor))
"""
)

# KEYS: the sets of reservations ahead. The most reservations not yet due among them.
_WAITING = (
    _NOW
    + """
local most = 0
for i = 1, #KEYS do
  most = math.max(most, redis.call('ZCOUNT', KEYS[i], '(' .. string.format('%.6f', now), '+inf'))
end
return most
"""
)


class LimiterUnavailableError(ReconcileError):
    """The shared limiter's Redis cannot be reached: nothing was sent to Stripe.

    Exit 3, like Stripe unreachable: a connection that may come back (Redis restarting,
    its pod not ready yet), so a Kubernetes Job retries it; a malformed URL is refused
    with the settings (exit 2).
    """

    exit_code = EXIT_STRIPE


def redacted_url(url: str) -> str:
    """The URL without its user and password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def connect(url: str) -> redis.Redis:
    """A client for ``url`` that has answered a PING; `LimiterUnavailableError` if not."""
    try:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=CONNECT_TIMEOUT_SECONDS,
            health_check_interval=30,
        )
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise LimiterUnavailableError(
            f"[stripe] limiter_url {redacted_url(url)} cannot be reached ({_cause(exc)}): "
            "start Redis there or fix the URL; without limiter_url each process keeps its "
            "own budget"
        ) from None
    return client


class RedisRequestLimiter(RequestLimiter):
    """`RequestLimiter` whose schedule and slowdowns live in Redis, shared under
    ``namespace`` (the account and mode) by every process that uses it."""

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        global_limit: float,
        *,
        per_endpoint_limit: float = PER_ENDPOINT_LIMIT,
        search_limit: float = SEARCH_LIMIT,
        burst: int | None = None,
        share: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            global_limit,
            per_endpoint_limit=per_endpoint_limit,
            search_limit=search_limit,
            burst=burst,
            share=share,
            clock=clock,
            sleep=sleep,
        )
        self._redis = client
        # One hash tag: every key of the account in one slot (Redis Cluster runs the
        # script only on keys of one slot).
        self._prefix = f"stripe-reconcile:limiter:{{{namespace}}}:"
        self._reserve = client.register_script(_RESERVE)
        self._refused = client.register_script(_REFUSED)
        self._factor = client.register_script(_FACTOR)
        self._waiting = client.register_script(_WAITING)

    def reserve(self, endpoint: str) -> float:
        _, wait = self.reserve_shared(endpoint)
        # Redis read its clock between sending and answering: counting the wait from the
        # answer can only make the send later, never earlier than its instant.
        return self._clock() + wait

    def reserve_shared(self, endpoint: str) -> tuple[float, float]:
        """Claim the earliest instant for ``endpoint`` in every bucket it belongs to:
        (that instant on Redis's clock, the seconds from Redis's now to it)."""
        keys: list[str] = []
        args: list[float | int] = [SAFETY, RECOVERY_PER_SECOND, KEY_TTL_MS]
        for name, limit, burst in self._limits_of(endpoint):
            keys += [self._prefix + name + ":state", self._prefix + name + ":ahead"]
            args += [limit, burst]
        keys.append(self._prefix + "sequence")
        instant, wait = self._call(self._reserve, keys, args)
        return float(instant), float(wait)

    def waiting(self, endpoint: str) -> int:
        keys = [self._prefix + name + ":ahead" for name, _, _ in self._limits_of(endpoint)]
        return int(self._call(self._waiting, keys, []))

    def rate_limited(self, endpoint: str, reason: str | None) -> tuple[str, ...]:
        names = buckets_named_by(reason, endpoint)
        args = [DECREASE, DECREASE_COOLDOWN, RECOVERY_PER_SECOND, MIN_FACTOR, KEY_TTL_MS]
        for name in names:
            self._call(self._refused, [self._prefix + name + ":state"], args)
        return names

    def rate_factor(self, bucket: str) -> float:
        keys = [self._prefix + bucket + ":state"]
        return float(self._call(self._factor, keys, [RECOVERY_PER_SECOND]))

    def _limits_of(self, endpoint: str) -> list[tuple[str, float, int]]:
        """(bucket name, limit, burst: 0 for the limit's default) of every bucket."""
        found = [
            (GLOBAL_BUCKET, self.global_limit, self._burst or 0),
            (endpoint_bucket(endpoint), self.per_endpoint_limit, 0),
        ]
        if is_search_endpoint(endpoint):
            found.append((SEARCH_BUCKET, self.search_limit, 0))
        return found

    def _call(self, script: object, keys: list[str], args: list[float | int]) -> Any:
        try:
            return script(keys=keys, args=args)  # type: ignore[operator]
        except redis.RedisError as exc:
            raise LimiterUnavailableError(
                f"the shared rate limiter's Redis failed ({_cause(exc)}): the run stops "
                "rather than exceed the account's budget; check Redis at [stripe] limiter_url"
            ) from None


def _cause(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # redis-py names the address it tried; the first line is enough and has no password.
    return text.splitlines()[0][:200]
