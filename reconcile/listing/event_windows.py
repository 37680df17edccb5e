"""Stripe's events since a point in time, paged by concurrent cursors over `created` windows.

One cursor waits out the latency of every page in turn, while the events endpoint's
budget (25 requests a second in test mode) would take many pages at once. So the listing
starts as one window from `since`, open above (events created while the run pages still
come), and a cursor whose page comes back full cuts the rest of its window by `created`
into pieces for workers that would otherwise idle: a few at a time, and no more than the
rest is worth at the density its pages showed (each piece costs a short last page). The
cursor keeps the second it is in and stops at the first event below it; the pieces take
the seconds below. A handful of events costs one request, as with one cursor; a day of
them is paged by as many cursors as the limiter keeps busy.

A second is never shared between two windows, so each window's events keep Stripe's own
order among those of the same second, and the windows, newest first, put together are
the listing one cursor would have given (`jobs.incremental` dedupes by id and applies
them in order). A window whose rest spans a single second cannot be cut: its cursor
pages it alone.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconcile.logs import get_logger
from reconcile.stripe_api.gateway import StripeGateway

__all__ = ["list_events_concurrently", "window_cuts"]

log = get_logger(__name__)

PAGE_SIZE = 100
# A piece cut off costs a short last page (and the cursor that lost it one): a rest is cut
# only into pieces of about this many pages or more, judged by the window's density so far.
MIN_PIECE_PAGES = 2.0
# Events come in bursts, so a density guessed from one page can be far off: a cut makes
# a few pieces, and those that come back full cut again.
MAX_PIECES_PER_CUT = 4


@dataclass
class _Window:
    gte: int
    lt: int | None  # None: open above
    # The lowest `created` this window still owns: raised when its rest is cut away.
    floor: int
    events: list[dict[str, Any]] = field(default_factory=list)
    newest: int | None = None  # the newest `created` this window listed


def window_cuts(low: int, high: int, pieces: int) -> list[int]:
    """Up to `pieces - 1` whole seconds strictly inside `(low, high)`, ascending, that cut
    `[low, high)` into `pieces` spans of about equal length."""
    span = high - low
    pieces = max(1, min(pieces, span))
    return sorted({low + span * number // pieces for number in range(1, pieces)} - {low, high})


class _Windows:
    """The windows waiting for a worker, those being paged, the workers, the first error."""

    def __init__(self, first: _Window, workers: int, work: Callable[[_Windows], None]) -> None:
        self.all: list[_Window] = [first]
        self.waiting: deque[_Window] = deque([first])
        self.workers = workers
        self.busy = 0
        self.idle = 0  # workers waiting in `take`
        self.threads: list[threading.Thread] = []
        self.error: BaseException | None = None
        self.cuts = 0
        self.cond = threading.Condition()
        self._work = work
        with self.cond:
            self._start(1)

    def _start(self, count: int) -> None:
        # Workers start as windows appear: a few events never cost a pool of threads.
        for _ in range(max(0, min(count - self.idle, self.workers - len(self.threads)))):
            thread = threading.Thread(
                target=contextvars.copy_context().run,
                args=(self._work, self),
                name=f"events-{len(self.threads)}",
                daemon=True,
            )
            self.threads.append(thread)
            thread.start()

    def take(self) -> _Window | None:
        with self.cond:
            self.idle += 1
            while not self.waiting and self.busy and self.error is None:
                self.cond.wait()
            self.idle -= 1
            if self.error is not None or not self.waiting:
                self.cond.notify_all()
                return None
            self.busy += 1
            return self.waiting.popleft()

    def finished(self, error: BaseException | None = None) -> None:
        with self.cond:
            self.busy -= 1
            if error is not None and self.error is None:
                self.error = error
            self.cond.notify_all()

    def wait_done(self) -> None:
        with self.cond:
            while (self.waiting or self.busy) and self.error is None:
                self.cond.wait()
            threads = list(self.threads)
        for thread in threads:
            thread.join()

    def cut(self, window: _Window, oldest: int, page_size: int) -> None:
        """Hand the rest of `window` below `oldest` to workers that would idle, when the
        rest, as dense as what the window listed so far, is worth the pieces."""
        with self.cond:
            free = self.workers - self.busy - len(self.waiting)
            floor = window.floor
            if free <= 0 or oldest - floor < 2:
                return
            newest = window.newest if window.newest is not None else oldest
            per_second = len(window.events) / (newest - oldest + 1)
            rest_pages = per_second * (oldest - floor) / page_size
            pieces = min(free, MAX_PIECES_PER_CUT, int(rest_pages / MIN_PIECE_PAGES))
            if pieces < 1:
                return
            edges = [floor, *window_cuts(floor, oldest, pieces), oldest]
            for gte, lt in itertools.pairwise(edges):
                piece = _Window(gte, lt, gte)
                self.all.append(piece)
                self.waiting.append(piece)
            window.floor = oldest
            self.cuts += 1
            self._start(len(edges) - 1)
            self.cond.notify_all()


def _page(
    gateway: StripeGateway,
    window: _Window,
    windows: _Windows,
    types: Sequence[str],
    page_size: int,
) -> None:
    listing = gateway.list_events(
        created_gte=window.gte, created_lt=window.lt, types=types, page_size=page_size
    )
    for listed, event in enumerate(listing, start=1):
        created = int(event["created"])
        if created < window.floor:
            break  # the rest of this window was cut away: other windows list it
        window.events.append(event)
        if window.newest is None:
            window.newest = created
        if listed % page_size == 0:
            # A full page: the next event costs a request, so this is where to cut.
            windows.cut(window, created, page_size)


def list_events_concurrently(
    gateway: StripeGateway,
    *,
    since: int,
    types: Sequence[str],
    workers: int,
    page_size: int = PAGE_SIZE,
) -> list[dict[str, Any]]:
    """Every event of `types` created at or after `since`, newest first as one cursor
    lists them (ties in Stripe's order), by up to `workers` cursors at once."""

    def work(state: _Windows) -> None:
        while (window := state.take()) is not None:
            try:
                _page(gateway, window, state, types, page_size)
            except BaseException as exc:  # handed to the caller's thread
                state.finished(exc)
                return
            state.finished()

    state = _Windows(_Window(since, None, since), max(1, workers), work)
    state.wait_done()
    if state.error is not None:
        raise state.error
    # Windows own disjoint spans of whole seconds: newest first, they list as one cursor.
    ordered = sorted(state.all, key=lambda w: w.floor, reverse=True)
    log.info("events listed", windows=len(state.all), cuts=state.cuts, workers=len(state.threads))
    return [event for window in ordered for event in window.events]
