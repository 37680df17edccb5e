"""Stripe's events, per mode: what each write emitted, kept the 30 days Stripe keeps them,
and the ways Stripe's events go wrong (late, out of order, never generated) on request.

An event holds a snapshot of its object (a copy of the compact record as it was at the
event), not its JSON: the JSON is built only when the event is served. Events sit in one
list sorted by `key` (created, then emission order) and in one list per type, so a page is
a few bisections and a slice, or a merge of the few type lists a `types[]` or wildcard
filter names: O(log N + page size) like customers. Events past retention fall below the
listing's lower bound at once and leave memory in batches, so the log holds at most 30
days of writes.
"""

from __future__ import annotations

import bisect
import heapq
import random
import re
import secrets
import string
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from sandbox.ordering import key_bounds, sort_key

__all__ = [
    "MAX_TYPES",
    "RETENTION_SECONDS",
    "EventFaults",
    "EventLog",
    "EventRecord",
    "Snapshotting",
    "changed_keys",
]

RETENTION_SECONDS = 30 * 86_400  # Stripe lists and retrieves events for 30 days
MAX_TYPES = 20  # Stripe's limit on `types[]`
# Expired events are cut from memory once this many (or a quarter of the log) piled up:
# the listing's lower bound hides them meanwhile, so each cut is paid for by many events.
_PRUNE_BATCH = 1024
_ID_ALPHABET = string.ascii_letters + string.digits


class Snapshotting(Protocol):
    """A store record that can copy itself as it is now (what an event shows)."""

    def snapshot(self) -> Any: ...


@dataclass(slots=True, eq=False)
class EventRecord:
    id: str
    type: str
    created: int
    key: int  # sort_key(created, emission order)
    snapshot: Any  # a copy of the CustomerRecord, PaymentMethodRecord or SubscriptionRecord
    previous: dict[str, Any] | None = None  # `data.previous_attributes`, on updates only
    request_id: str | None = None  # None: an automatic event (no API request caused it)
    idempotency_key: str | None = None
    visible_at: float = 0.0  # the sandbox time from which the event is listed


def _by_key(event: EventRecord) -> int:
    return event.key


def new_event_id() -> str:
    return "evt_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


_MISSING = object()


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Stripe's `previous_attributes` for a changed hash such as `metadata`: each changed
    key with its old value, `None` for a key that did not exist before."""
    changed = {key: value for key, value in old.items() if new.get(key, _MISSING) != value}
    for key in new.keys() - old.keys():
        changed[key] = None
    return changed


class EventFaults:
    """How the next events go wrong; shared by both modes, settable while the sandbox runs.

    Scripted: `delay_next` (late: listed only `seconds` after the write), `backdate_next`
    (out of order: `created` that many seconds before the write, so the event lists behind
    events already listed), `drop_next` (never generated: the next `count` events, or with
    `writes=True` every event of the next `count` writes). Random: each event is dropped,
    delayed or backdated with the `*_rate` probabilities, by up to `max_*_seconds`.
    Stripe lists an event once however often it delivers its webhook, so nothing here
    makes a listing show duplicates."""

    def __init__(self, seed: int | None = None) -> None:
        self.drop_rate = 0.0
        self.delay_rate = 0.0
        self.max_delay_seconds = 0.0
        self.backdate_rate = 0.0
        self.max_backdate_seconds = 0.0
        self._random = random.Random(seed)
        self._delays: deque[float] = deque()
        self._backdates: deque[float] = deque()
        self._drop_events = 0
        self._drop_writes = 0
        self._lock = threading.Lock()

    def delay_next(self, seconds: float, count: int = 1) -> None:
        _check_count(count)
        _check_seconds("seconds", seconds)
        with self._lock:
            self._delays.extend([float(seconds)] * count)

    def backdate_next(self, seconds: float, count: int = 1) -> None:
        _check_count(count)
        _check_seconds("seconds", seconds)
        with self._lock:
            self._backdates.extend([float(seconds)] * count)

    def drop_next(self, count: int = 1, *, writes: bool = False) -> None:
        _check_count(count)
        if not isinstance(writes, bool):
            raise ValueError(f"writes must be true or false, got {writes!r}")
        with self._lock:
            if writes:
                self._drop_writes += count
            else:
                self._drop_events += count

    def configure(self, settings: Mapping[str, Any]) -> None:
        """Set the random rates: `drop_rate`, `delay_rate`, `max_delay_seconds`,
        `backdate_rate`, `max_backdate_seconds` (probabilities 0 to 1, seconds >= 0), and
        `seed` to make the draws repeatable."""
        checked: dict[str, float] = {}
        for name, value in settings.items():
            if name == "seed":
                continue
            if name not in _RANDOM_SETTINGS:
                raise ValueError(
                    f"unknown event fault setting {name!r}: use one of "
                    f"{', '.join(_RANDOM_SETTINGS)} or seed"
                )
            number = float(value)
            if name.endswith("_rate") and not 0.0 <= number <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
            _check_seconds(name, number)
            checked[name] = number
        with self._lock:
            for name, number in checked.items():
                setattr(self, name, number)
            if "seed" in settings:
                self._random.seed(int(settings["seed"]))

    def settings(self) -> dict[str, Any]:
        with self._lock:
            return {
                **{name: getattr(self, name) for name in _RANDOM_SETTINGS},
                "scheduled": {
                    "delays": list(self._delays),
                    "backdates": list(self._backdates),
                    "drop_events": self._drop_events,
                    "drop_writes": self._drop_writes,
                },
            }

    def clear(self) -> None:
        with self._lock:
            for name in _RANDOM_SETTINGS:
                setattr(self, name, 0.0)
            self._delays.clear()
            self._backdates.clear()
            self._drop_events = self._drop_writes = 0

    # --- used by EventLog ----------------------------------------------------------------
    def drops_write(self) -> bool:
        """At a write's first event: whether every event of that write is dropped."""
        with self._lock:
            if self._drop_writes > 0:
                self._drop_writes -= 1
                return True
        return False

    def next_event(self) -> tuple[bool, float, float]:
        """(dropped, seconds backdated, seconds late) for the next event."""
        with self._lock:
            if self._drop_events > 0:
                self._drop_events -= 1
                return True, 0.0, 0.0
            # Drawn only when a rate is set, so scripted-only runs stay repeatable.
            if self.drop_rate > 0 and self._random.random() < self.drop_rate:
                return True, 0.0, 0.0
            backdate = self._backdates.popleft() if self._backdates else 0.0
            if (
                not backdate
                and self.backdate_rate > 0
                and self._random.random() < self.backdate_rate
            ):
                backdate = self._random.uniform(1.0, max(1.0, self.max_backdate_seconds))
            delay = self._delays.popleft() if self._delays else 0.0
            if not delay and self.delay_rate > 0 and self._random.random() < self.delay_rate:
                delay = self._random.uniform(0.0, self.max_delay_seconds)
        return False, backdate, delay


_RANDOM_SETTINGS = (
    "drop_rate",
    "delay_rate",
    "max_delay_seconds",
    "backdate_rate",
    "max_backdate_seconds",
)


def _check_count(count: int) -> None:
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"count must be a whole number of at least 1, got {count!r}")


def _check_seconds(name: str, seconds: float) -> None:
    if not seconds >= 0:  # also refuses NaN
        raise ValueError(f"{name} must be a number of seconds >= 0, got {seconds!r}")


@dataclass(slots=True)
class _Write:
    request_id: str | None
    idempotency_key: str | None
    started: bool = False
    dropped: bool = False


class EventLog:
    """The events of one mode. Not locked itself: the store's lock covers it."""

    def __init__(self, clock: Callable[[], float], faults: EventFaults) -> None:
        self._clock = clock
        self.faults = faults
        self._seq = 0
        self._index: list[EventRecord] = []  # listed events, ascending by key
        self._by_type: dict[str, list[EventRecord]] = {}
        self._by_id: dict[str, EventRecord] = {}  # listed events only
        self._pending: list[tuple[float, int, EventRecord]] = []  # late ones, by visible_at
        self._write: _Write | None = None
        self._suspended = 0

    # --- writing ---------------------------------------------------------------------------
    @contextmanager
    def write(
        self, request_id: str | None = None, idempotency_key: str | None = None
    ) -> Iterator[None]:
        """Events emitted inside belong to one write (one API request, or one admin action):
        they carry its request id and key, and `drop_next(writes=True)` drops them all."""
        if self._write is not None:  # nested: the outer write owns the events
            yield
            return
        self._write = _Write(request_id, idempotency_key)
        try:
            yield
        finally:
            self._write = None

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """No events inside: bulk loads put an account in place, they are not writes."""
        self._suspended += 1
        try:
            yield
        finally:
            self._suspended -= 1

    def emit(
        self, event_type: str, record: Snapshotting, previous: dict[str, Any] | None = None
    ) -> EventRecord | None:
        """Record that `record` (already changed) had `event_type` happen to it now; None
        when the event is suspended or dropped on purpose."""
        if self._suspended:
            return None
        write = self._write
        if write is None:
            if self.faults.drops_write():
                return None
        else:
            if not write.started:
                write.started = True
                write.dropped = self.faults.drops_write()
            if write.dropped:
                return None
        dropped, backdate, delay = self.faults.next_event()
        if dropped:
            return None
        now = self._clock()
        self._refresh(now)  # keeps memory to the retention window even if nobody lists
        created = int(now - backdate)
        self._seq += 1
        event = EventRecord(
            new_event_id(),
            event_type,
            created,
            sort_key(created, self._seq),
            record.snapshot(),
            previous,
            write.request_id if write else None,
            write.idempotency_key if write else None,
            now + delay,
        )
        if delay > 0:
            heapq.heappush(self._pending, (event.visible_at, self._seq, event))
        else:
            self._publish(event)
        return event

    def load(self, events: Iterable[tuple[str, str, int, Any, dict[str, Any] | None]]) -> int:
        """Put a history in place at once (one sort, no faults): (id, type, created,
        snapshot, previous) tuples in the order they happened. Events past retention or
        after the sandbox's now are left out; returns how many were kept."""
        now = self._clock()
        oldest = int(now) - RETENTION_SECONDS
        fresh: list[EventRecord] = []
        seq = self._seq
        for event_id, event_type, created, snapshot, previous in events:
            if not oldest <= created <= now or event_id in self._by_id:
                continue
            seq += 1
            event = EventRecord(
                event_id, event_type, created, sort_key(created, seq), snapshot, previous
            )
            event.visible_at = created
            fresh.append(event)
        self._seq = seq
        for event in fresh:
            self._by_id[event.id] = event
            self._by_type.setdefault(event.type, []).append(event)
        self._index.extend(fresh)
        self._index.sort(key=_by_key)
        for events_of_type in self._by_type.values():
            events_of_type.sort(key=_by_key)
        return len(fresh)

    def _publish(self, event: EventRecord) -> None:
        _insert(self._index, event)
        _insert(self._by_type.setdefault(event.type, []), event)
        self._by_id[event.id] = event

    # --- reading ---------------------------------------------------------------------------
    def _oldest_listed(self, now: float) -> int:
        return int(now) - RETENTION_SECONDS

    def _refresh(self, now: float) -> int:
        """Publish late events now due, drop expired ones in batches; returns the oldest
        `created` still listed."""
        pending = self._pending
        while pending and pending[0][0] <= now:
            self._publish(heapq.heappop(pending)[2])
        oldest = self._oldest_listed(now)
        cut = sort_key(oldest, 0)
        expired = bisect.bisect_left(self._index, cut, key=_by_key)
        if expired and (expired >= _PRUNE_BATCH or 4 * expired >= len(self._index)):
            for event in self._index[:expired]:
                del self._by_id[event.id]
            del self._index[:expired]
            for event_type, events_of_type in list(self._by_type.items()):
                del events_of_type[: bisect.bisect_left(events_of_type, cut, key=_by_key)]
                if not events_of_type:
                    del self._by_type[event_type]
        return oldest

    def get(self, event_id: str) -> EventRecord | None:
        """The event if it is listed now: published, and within retention."""
        oldest = self._refresh(self._clock())
        event = self._by_id.get(event_id)
        if event is None or event.created < oldest:
            return None
        return event

    def page(
        self,
        *,
        limit: int,
        created: int | Mapping[str, int] | None = None,
        type_pattern: str | None = None,
        types: Sequence[str] | None = None,
        starting_after: EventRecord | None = None,
        ending_before: EventRecord | None = None,
    ) -> tuple[list[EventRecord], bool]:
        """A page, newest first, and whether more lie beyond it in the paging direction.

        `type_pattern` is one type or a pattern where `*` stands for any characters;
        `types` are exact type names (at most MAX_TYPES). With `ending_before` alone the
        page is the `limit` events just newer than the cursor, so walking that way goes
        from older to newer, as Stripe's listing does."""
        oldest = self._refresh(self._clock())
        low, high = key_bounds(created)
        low = max(low, sort_key(oldest, 0))
        if starting_after is not None:
            high = min(high, starting_after.key)
        if ending_before is not None:
            low = max(low, ending_before.key + 1)
        lists = self._candidates(type_pattern, types)
        forward = ending_before is not None and starting_after is None
        if len(lists) == 1:
            return _slice(lists[0], low, high, limit, forward)
        return _merge(lists, low, high, limit, forward)

    def _candidates(
        self, type_pattern: str | None, types: Sequence[str] | None
    ) -> list[list[EventRecord]]:
        if types:
            return [self._by_type[name] for name in dict.fromkeys(types) if name in self._by_type]
        if type_pattern is None:
            return [self._index]
        if "*" not in type_pattern:
            found = self._by_type.get(type_pattern)
            return [found] if found else []
        matcher = re.compile(".*".join(re.escape(part) for part in type_pattern.split("*")))
        return [events for name, events in self._by_type.items() if matcher.fullmatch(name)]

    def stats(self) -> dict[str, Any]:
        oldest = self._refresh(self._clock())
        listed = len(self._index) - bisect.bisect_left(
            self._index, sort_key(oldest, 0), key=_by_key
        )
        return {
            "listed": listed,
            "pending": len(self._pending),
            "held": len(self._index) + len(self._pending),  # in memory, expired included
            "types": {
                name: len(events) for name, events in sorted(self._by_type.items()) if events
            },
        }


def _insert(events: list[EventRecord], event: EventRecord) -> None:
    # Events come newest last, so this is an append but for backdated ones.
    if not events or events[-1].key < event.key:
        events.append(event)
    else:
        bisect.insort(events, event, key=_by_key)


def _slice(
    events: list[EventRecord], low: int, high: int, limit: int, forward: bool
) -> tuple[list[EventRecord], bool]:
    lo = bisect.bisect_left(events, low, key=_by_key)
    hi = bisect.bisect_left(events, high, key=_by_key)
    if forward:
        end = min(hi, lo + limit)
        page = events[lo:end]
        has_more = end < hi
    else:
        start = max(lo, hi - limit)
        page = events[start:hi]
        has_more = start > lo
    page.reverse()
    return page, has_more


def _merge(
    lists: list[list[EventRecord]], low: int, high: int, limit: int, forward: bool
) -> tuple[list[EventRecord], bool]:
    """`_slice` over the union of several sorted lists (keys are unique across them)."""
    heap: list[tuple[int, int, int, int]] = []  # (order, list, position, bound)
    for number, events in enumerate(lists):
        lo = bisect.bisect_left(events, low, key=_by_key)
        hi = bisect.bisect_left(events, high, key=_by_key)
        if lo >= hi:
            continue
        if forward:
            heap.append((events[lo].key, number, lo, hi))
        else:
            heap.append((-events[hi - 1].key, number, hi - 1, lo))
    heapq.heapify(heap)
    page: list[EventRecord] = []
    while heap and len(page) < limit:
        _, number, position, bound = heapq.heappop(heap)
        events = lists[number]
        page.append(events[position])
        following = position + 1 if forward else position - 1
        if (following < bound) if forward else (following >= bound):
            order = events[following].key
            heapq.heappush(heap, (order if forward else -order, number, following, bound))
    if forward:
        page.reverse()
    return page, bool(heap)
