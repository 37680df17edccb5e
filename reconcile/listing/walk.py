"""The customer listing of a run: a work queue of `created` windows, paged concurrently.

Each window is walked the SDK's way, `client.v1.customers.list(params).auto_paging_iter()`
(through `StripeGateway.customers_list`, the limiter and retries in its HTTP client), a
page-worth of customers at a time. Every page-worth is stored in the run's work folder
(reconcile.listing.parts) and only then is its window's cursor (the last id stored) moved
on in the state database (reconcile.listing.checkpoints), the way tap-stripe moves a
bookmark only after the data is stored: `starting_after` that id continues exactly. One
thread commits those moves (and the cuts) in batches, in order. A run killed at any point
resumes from the last committed page-worth of each window: at most the pages of the last
batch are fetched again.

Every window ends on a short page (half a request wasted, on average) and an empty
window costs a request for nothing, so windows are few: a listing starts as one window
(or the configured date windows) and gains one only by work stealing. When no window
waits for a worker, the limiter is starved of requests and fewer windows run than the
rate needs at the page time observed (`cursors_needed`, the limiter's waits left out),
the window with the longest estimated rest (`rest_pages`, at the density its own pages
showed; at least `MIN_SPLIT_PAGES`) gives the older half of it to a new window
(`split_point`); while fewer than half the cursors needed run, any long window does, as
often as it takes (windows waiting for a worker count as running), so the listing
reaches its pace in a page time or two. So a small account walks a few
windows, a large one about as many as the rate keeps busy, and the end of a listing
does not wait on one long walk. The
lowest window (no customer known below it) has no known end while the account's age is
unknown: it is cut at the geometric mean of the span the listing has covered and the
span back to 2010, which keeps a young account's cuts near its customers; once the
lowest window is listed to its end, the account's oldest customer bounds every
estimate. A window whose rest spans a single second cannot be cut: its customers share
`created` and are paged by its cursor alone.

Where the server rejects the `created` filter, the windows are paged one after another,
newest first, each starting after the last customer of the one before: one cursor over
the whole listing, as the pager's fallback needs.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import gc
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconcile.atomic import fsync_dir
from reconcile.listing.checkpoints import (
    CheckpointStore,
    PageStored,
    RunInterrupted,
    WindowCheckpoint,
    WindowCut,
)
from reconcile.listing.parts import page_body, read_part_bodies, read_parts, write_part
from reconcile.logs import get_logger
from reconcile.progress import Advance
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter import bucket_shape
from reconcile.stripe_api.pager import PAGE_SIZE as PAGER_PAGE_SIZE
from reconcile.stripe_api.pager import WindowPage, iter_window_pages

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DAY",
    "MAX_WORKERS",
    "MIN_SPLIT_PAGES",
    "PAGE_SIZE",
    "PLANNED_MIN_SPLIT_PAGES",
    "STRIPE_FLOOR",
    "HeldPages",
    "Keep",
    "OnPage",
    "cursors_needed",
    "list_windows",
    "listing_frame",
    "merge_records",
    "page_windows",
    "rest_pages",
    "split_point",
    "window_bounds",
    "workers_for",
]

log = get_logger(__name__)

DAY = 86_400
# No Stripe customer was created before 2010 (Stripe's launch); the oldest window is
# open below anyway, so this only shapes the split.
STRIPE_FLOOR = 1_262_304_000
PAGE_SIZE = PAGER_PAGE_SIZE
# A list page takes about 0.3 s at Stripe, 0.4 s with jitter, plus storing it here: twice
# that keeps the limiter fed when pages come back slow; extra workers only wait on it.
_PAGE_SECONDS = 0.6
# A worker spends its time waiting on the network, so threads are cheap here; past this
# many, they only add contention for the interpreter.
MAX_WORKERS = 160

LIST_ENDPOINT = "GET /v1/customers"
# Requests waiting on the limiter above which it is not starved of cursors: more windows
# would only wait too (and each costs a short last page).
QUEUE_SLACK = 2
# A rest shorter than this (in pages) is not cut: its walk ends soon anyway, and the cut
# would cost a short page for little time. Windows planned from the account's last
# listing (reconcile.rules.listing_plan) are short and end together already: only a rest
# the account grew since (its newest window) is worth a short page.
MIN_SPLIT_PAGES = 4.0
PLANNED_MIN_SPLIT_PAGES = 16.0
# A window whose rest is under this fraction of the longest one's leaves the cut to it.
LONGEST_FRACTION = 0.75
# The page time assumed until pages have been timed.
_FIRST_PAGE_SECONDS = 0.35

OnPage = Callable[[list[dict[str, Any]]], None]
"""Called with each page as it is stored (from the worker's thread), e.g. to start
per-customer calls while the listing goes on."""

Keep = Callable[[dict[str, Any]], dict[str, Any]]
"""What a job keeps of a listed customer (e.g. without the rest of an expanded object)."""

HeldPages = dict[tuple[int, int], list[dict[str, Any]]]
"""The customers of the pages fetched now, by (window, page), as stored: read from here
instead of decoding their parts again (reconcile.listing.parts.read_parts)."""


def window_bounds(
    created_lt: int, count: int, floor: int = STRIPE_FLOOR
) -> list[tuple[int | None, int]]:
    """`count` windows `[gte, lt)` newest first, each twice as long as the one after it.

    Customers pile up in recent times, so recent windows are short (1 day, 2, 4, ...)
    and the oldest is open below (`gte` None), so no customer can fall outside.
    """
    if count < 1:
        raise ValueError(f"window count must be at least 1, got {count}")
    edges = [created_lt]
    length = DAY
    while len(edges) < count and created_lt - length > floor:
        edges.append(created_lt - length)
        length *= 2
    windows: list[tuple[int | None, int]] = [
        (edges[i + 1], edges[i]) for i in range(len(edges) - 1)
    ]
    windows.append((None, edges[-1]))
    return windows


def workers_for(requests_per_second: float) -> int:
    """Enough concurrent cursors to use the rate limit at Stripe's page latency."""
    return max(1, min(MAX_WORKERS, math.ceil(requests_per_second * _PAGE_SECONDS)))


def cursors_needed(requests_per_second: float, page_seconds: float) -> int:
    """Windows to walk at once so the limiter, not the latency of a cursor, sets the pace:
    each cursor asks for its next page only once its last one is stored."""
    return max(1, math.ceil(requests_per_second * page_seconds))


def split_point(
    created_gte: int | None,
    oldest_seen: int,
    *,
    listing_lt: int,
    bottom: int | None = None,
    lowest: bool | None = None,
    floor: int = STRIPE_FLOOR,
) -> int | None:
    """Where to cut the rest `[gte, oldest_seen]` of a window whose cursor is at a customer
    created at `oldest_seen`: the newer part `[cut, oldest_seen]` stays with the window, the
    older `[gte, cut)` becomes a new one. None when the rest spans under two seconds.

    Once the account's oldest customer (`bottom`) is known, or for a window with customers
    known below it, the rest is cut in its middle: at the density the window's pages
    showed, that halves its customers. The `lowest` window (no customer known below it;
    by default: the one open below) has no known end while the account's age is unknown:
    it is cut at the geometric mean of the span the listing has covered
    (`listing_lt - oldest_seen`) and the span back to its lower bound (2010 at most), a
    guess that keeps the cut near the cursor for a young account and halves the rest,
    on a log scale, for an old one.
    """
    low = floor if created_gte is None else created_gte
    if bottom is not None:
        low = max(low, bottom)
    low = min(low, oldest_seen)
    if oldest_seen - low < 2:
        return None
    if lowest is None:
        lowest = created_gte is None
    if lowest and bottom is None:
        seen = max(1, listing_lt - oldest_seen)
        reach = max(seen, listing_lt - low)
        cut = listing_lt - round(math.sqrt(seen * reach))
    else:
        cut = (low + oldest_seen + 1) // 2
    return min(max(cut, low + 1), oldest_seen)


def rest_pages(
    checkpoint: WindowCheckpoint,
    oldest_seen: int,
    *,
    bottom: int | None = None,
    floor: int = STRIPE_FLOOR,
) -> float:
    """The pages left in a window, at the density its own pages showed."""
    low = floor if checkpoint.created_gte is None else checkpoint.created_gte
    if bottom is not None:
        low = max(low, bottom)
    density = checkpoint.rows / max(1, checkpoint.created_lt - oldest_seen)
    return density * max(0, oldest_seen - low) / PAGE_SIZE


def merge_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Newest first, ties by id, each id once: the same whatever the windows were."""
    unique = {str(r["id"]): r for r in records}
    return sorted(unique.values(), key=lambda r: (-int(r.get("created") or 0), str(r["id"])))


class _Queue:
    """Windows waiting for a worker, the windows being paged, and the latest checkpoints."""

    def __init__(
        self,
        checkpoints: Sequence[WindowCheckpoint],
        workers: int,
        min_split_pages: float = MIN_SPLIT_PAGES,
    ) -> None:
        self.cond = threading.Condition()
        self.workers = workers
        self.min_split_pages = min_split_pages
        self.latest = {c.window: c for c in checkpoints}
        self.waiting = sorted((c for c in checkpoints if not c.done), key=_newest_first)
        self.running: set[int] = set()
        self.next_window = max(self.latest, default=-1) + 1
        self.listing_lt = max((c.created_lt for c in checkpoints), default=0)
        # Pages left in each running window, as its last page-worth estimated them.
        self.rests: dict[int, float] = {}
        # The account's oldest customer, once the lowest window is listed to its end: no
        # customer lies below it.
        self.bottom: int | None = None
        # The oldest customer any window has listed so far.
        self.oldest_seen: int | None = None
        # Seconds a cursor takes per page-worth (request, answer, storing it), smoothed.
        self.page_seconds = _FIRST_PAGE_SECONDS

    def may_split(self, window: int, rest: float, cursors: int, oldest_seen: int) -> bool:
        """Whether `window`, whose rest is `rest` pages, should give half of it to a new
        window: no window waits for a worker, fewer run than `cursors`, and none has a
        much longer rest (that one is cut instead, at its next page)."""
        with self.cond:
            self.rests[window] = rest
            if self.oldest_seen is None or oldest_seen < self.oldest_seen:
                self.oldest_seen = oldest_seen
            # Windows waiting for a worker start at once: they count as running.
            active = len(self.running) + len(self.waiting)
            if active >= min(cursors, self.workers):
                return False
            if rest < self.min_split_pages:
                return False
            # While fewer than half the cursors run, every long window splits, as often as
            # it takes: the listing reaches its pace in a page time or two, not one window
            # more per page time.
            if 2 * active <= cursors:
                return True
            if self.waiting:
                return False
            longest = max((r for w, r in self.rests.items() if w != window), default=0.0)
            return rest >= LONGEST_FRACTION * longest

    def finished(self, window: int) -> None:
        with self.cond:
            self.rests.pop(window, None)

    def timed(self, seconds: float) -> None:
        with self.cond:
            self.page_seconds += 0.1 * (seconds - self.page_seconds)

    def holds_oldest(self, checkpoint: WindowCheckpoint) -> bool:
        """Whether no customer is known below this window: its rest may reach the
        account's end, wherever that is."""
        with self.cond:
            gte, oldest = checkpoint.created_gte, self.oldest_seen
            return gte is None or oldest is None or oldest >= gte

    def window_done(self, checkpoint: WindowCheckpoint, oldest: int | None) -> None:
        """Learn from a window listed to its end whether the account ends in it: it does
        when every window below it is listed too (and none held a customer)."""
        with self.cond:
            gte = checkpoint.created_gte
            if oldest is None or (self.bottom is not None and self.bottom <= oldest):
                return
            if gte is not None:
                below = [c for c in self.latest.values() if c.created_lt <= gte]
                if not all(c.done and c.rows == 0 for c in below):
                    return
            self.bottom = oldest

    def add(self, checkpoint: WindowCheckpoint) -> None:
        with self.cond:
            self.latest[checkpoint.window] = checkpoint
            self.waiting.append(checkpoint)
            self.waiting.sort(key=_newest_first)
            self.cond.notify_all()

    def update(self, checkpoint: WindowCheckpoint) -> None:
        with self.cond:
            self.latest[checkpoint.window] = checkpoint

    def new_window(self) -> int:
        with self.cond:
            window = self.next_window
            self.next_window += 1
            return window

    def cursor_before(self, checkpoint: WindowCheckpoint) -> str | None:
        """The last customer listed in the windows newer than this one (fallback paging)."""
        with self.cond:
            newer = [
                c
                for c in self.latest.values()
                if c.created_lt > checkpoint.created_lt and c.last_id is not None
            ]
        return min(newer, key=lambda c: c.created_lt).last_id if newer else None


def _newest_first(checkpoint: WindowCheckpoint) -> tuple[int, int]:
    return (-checkpoint.created_lt, checkpoint.window)


class _CheckpointWriter:
    """One thread commits the listing's checkpoint changes, in their order, in batches.

    A commit per page from a hundred workers queued them all on the state database's
    write lock (SQLite has one writer; its busy handler sleeps); one thread committing
    whatever has gathered since its last commit needs a handful of commits a second. A
    change is queued only once what it records is stored, so a bookmark still never runs
    ahead of the data; a kill loses at most the last batch, whose pages are fetched again.
    """

    def __init__(self, store: CheckpointStore, listing_id: str, work_dir: Path) -> None:
        self._store = store
        self._listing_id = listing_id
        self._work_dir = work_dir
        self._cond = threading.Condition()
        self._pending: list[PageStored | WindowCut] = []
        self._queued = 0
        self._applied = 0
        self._error: BaseException | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="listing-checkpoints", daemon=True)
        self._thread.start()

    def put(self, change: PageStored | WindowCut) -> None:
        with self._cond:
            if self._error is not None:
                raise self._error
            self._pending.append(change)
            self._queued += 1
            self._cond.notify_all()

    def close(self) -> None:
        """Wait until every queued change is committed, then stop; raises the commit's
        error if one failed."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
            try:
                if any(isinstance(change, PageStored) for change in batch):
                    # The pages' renames are made durable once for the batch, before
                    # the bookmarks that rely on them (no folder yet: no page stored).
                    with contextlib.suppress(FileNotFoundError):
                        fsync_dir(self._work_dir)
                self._store.apply(self._listing_id, batch)
            except BaseException as exc:  # handed to the workers and to close()
                with self._cond:
                    self._error = exc
                    self._pending = []
                    self._cond.notify_all()
                return
            with self._cond:
                self._applied += len(batch)
                self._cond.notify_all()


class _Pager:
    def __init__(
        self,
        gateway: StripeGateway,
        store: CheckpointStore,
        listing_id: str,
        work_dir: Path,
        queue: _Queue,
        *,
        expand: Sequence[str],
        stop: threading.Event | None,
        advance: Advance,
        on_page: OnPage | None,
        file_mode: int,
        keep: Keep | None = None,
        held: HeldPages | None = None,
    ) -> None:
        self.gateway = gateway
        self.store = store
        self.writer = _CheckpointWriter(store, listing_id, work_dir)
        self.listing_id = listing_id
        self.work_dir = work_dir
        self.queue = queue
        self.expand = expand
        self.stop = stop
        self.advance = advance
        self.on_page = on_page
        self.file_mode = file_mode
        self.keep = keep
        self.held = held
        # Set when any worker fails, so the others stop at their next page.
        self.abort = threading.Event()
        self.splits = 0
        self.split_lock = threading.Lock()

    def stopping(self) -> bool:
        return self.abort.is_set() or (self.stop is not None and self.stop.is_set())

    def _stored(
        self, checkpoint: WindowCheckpoint, page: WindowPage, done: bool
    ) -> WindowCheckpoint:
        records = page.records
        if records and self.keep is not None:
            # Trimmed in the worker, as the page arrives: the part is stored, read back
            # and decoded at the size the job needs, not at the size of the expansions.
            records = list(map(self.keep, records))
        if records:
            write_part(
                self.work_dir,
                checkpoint.window,
                checkpoint.pages,
                page_body(records),
                file_mode=self.file_mode,
                sync_dir=False,
            )
            if self.held is not None:
                self.held[(checkpoint.window, checkpoint.pages)] = records
        moved = WindowCheckpoint(
            window=checkpoint.window,
            created_gte=checkpoint.created_gte,
            created_lt=checkpoint.created_lt,
            last_id=str(records[-1]["id"]) if records else checkpoint.last_id,
            pages=checkpoint.pages + (1 if records else 0),
            rows=checkpoint.rows + len(records),
            done=done,
        )
        self.writer.put(PageStored(moved.window, moved.last_id, moved.pages, moved.rows, done))
        self.queue.update(moved)
        if records:
            self.advance(len(records))
            if self.on_page is not None:
                self.on_page(records)
        return moved

    def _maybe_split(self, checkpoint: WindowCheckpoint, oldest_seen: int) -> WindowCheckpoint:
        """Give the older half of this window's rest to a new window, when the limiter is
        starved of cursors and this rest is the longest (see the module)."""
        if self.gateway.created_filter_supported is not True:
            return checkpoint
        queue = self.queue
        rest = rest_pages(checkpoint, oldest_seen, bottom=queue.bottom)
        limiter = self.gateway.limiter
        rate = bucket_shape(min(limiter.global_limit, limiter.per_endpoint_limit)).sustained_rate
        cursors = cursors_needed(rate, queue.page_seconds)
        if not queue.may_split(checkpoint.window, rest, cursors, oldest_seen):
            return checkpoint
        if limiter.waiting(LIST_ENDPOINT) > QUEUE_SLACK:
            return checkpoint
        # One split at a time, so two workers do not both cut for the same idle worker.
        with self.split_lock:
            cut = split_point(
                checkpoint.created_gte,
                oldest_seen,
                listing_lt=queue.listing_lt,
                bottom=queue.bottom,
                lowest=queue.holds_oldest(checkpoint),
            )
            if cut is None:
                return checkpoint
            older = WindowCheckpoint(
                queue.new_window(), checkpoint.created_gte, cut, None, 0, 0, False
            )
            self.writer.put(WindowCut(checkpoint.window, cut, older))
            queue.add(older)
            self.splits += 1
        narrowed = WindowCheckpoint(
            checkpoint.window,
            cut,
            checkpoint.created_lt,
            checkpoint.last_id,
            checkpoint.pages,
            checkpoint.rows,
            False,
        )
        queue.update(narrowed)
        return narrowed

    def page_window(self, checkpoint: WindowCheckpoint) -> None:
        try:
            self._page_window(checkpoint)
        except BaseException:
            self.abort.set()
            raise

    def _page_window(self, checkpoint: WindowCheckpoint) -> None:
        try:
            self._walk(checkpoint)
        finally:
            self.queue.finished(checkpoint.window)

    def _walk(self, checkpoint: WindowCheckpoint) -> None:
        starting_after = checkpoint.last_id
        if (
            starting_after is None
            and checkpoint.pages == 0
            and self.gateway.created_filter_supported is False
        ):
            # One cursor over the whole listing: start after the newer windows' last customer.
            starting_after = self.queue.cursor_before(checkpoint)
        oldest: int | None = None
        while True:
            asked, waited = time.monotonic(), self.gateway.limiter_waited()
            for page in iter_window_pages(
                self.gateway,
                checkpoint.created_gte,
                checkpoint.created_lt,
                starting_after=starting_after,
                expand=self.expand,
            ):
                if page.records:
                    oldest = int(page.records[-1].get("created") or 0)
                checkpoint = self._stored(checkpoint, page, done=page.last)
                # A cursor's time per page-worth, less its waits on the limiter.
                now, wait = time.monotonic(), self.gateway.limiter_waited()
                if page.records:
                    self.queue.timed(now - asked - (wait - waited))
                asked, waited = now, wait
                if page.last:
                    self.queue.window_done(checkpoint, oldest)
                    return
                # Checked between pages: what was fetched is stored, nothing is half-done.
                if self.stopping():
                    return
                if oldest is None:
                    continue
                # As many cuts as the ramp needs (see `_Queue.may_split`).
                cut = checkpoint
                while (again := self._maybe_split(cut, oldest)) is not cut:
                    cut = again
                if cut is not checkpoint:
                    # The next page is not fetched yet (a page-worth is handed over before
                    # the next request): ask again for the narrowed range, after the same
                    # customer.
                    checkpoint, starting_after = cut, cut.last_id
                    break
            else:
                return  # not reached: a window's pages end with one marked last


def list_windows(
    gateway: StripeGateway,
    store: CheckpointStore,
    listing_id: str,
    work_dir: Path,
    **options: Any,
) -> list[dict[str, Any]]:
    """Every customer of the listing as dicts, newest first (ties by id), each once,
    fetching only what is not stored (`page_windows` for the options)."""
    finished = page_windows(gateway, store, listing_id, work_dir, **options)
    return merge_records(read_parts(work_dir, [(c.window, c.pages) for c in finished]))


def listing_frame(
    work_dir: Path, checkpoints: Sequence[WindowCheckpoint], metadata_keys: Sequence[str]
) -> pd.DataFrame:
    """The customers snapshot straight from the stored pages (Arrow, no dict per customer):
    newest first, ties by id, each id once, as `customers_frame(list_windows(...))`."""
    # Imported here: pandas and Arrow take half a second to load, and the listing's first
    # request should not wait for what only its end needs.
    from reconcile.rules.snapshots import customers_frame_from_pages

    bodies = read_part_bodies(work_dir, [(c.window, c.pages) for c in checkpoints])
    frame = customers_frame_from_pages(bodies, metadata_keys)
    frame = frame.drop_duplicates("customer_id", keep="last")
    frame = frame.sort_values(["created", "customer_id"], ascending=[False, True], kind="stable")
    return frame.reset_index(drop=True)


def page_windows(
    gateway: StripeGateway,
    store: CheckpointStore,
    listing_id: str,
    work_dir: Path,
    *,
    workers: int = 4,
    expand: Sequence[str] = (),
    stop: threading.Event | None = None,
    advance: Advance | None = None,
    on_page: OnPage | None = None,
    file_mode: int = 0o600,
    on_resume: Callable[[int, int], None] | None = None,
    keep: Keep | None = None,
    held: HeldPages | None = None,
    bottom: int | None = None,
    planned: bool = False,
) -> list[WindowCheckpoint]:
    """Page every window not done yet into the work folder; the finished checkpoints.

    `bottom`, if known, is the `created` of the account's oldest customer: the lowest
    window's rest is then cut by its customers, never below them into an empty piece.
    `planned`: the windows were cut by the account's last listing, so only a long rest is
    cut further (`PLANNED_MIN_SPLIT_PAGES`).

    `on_page` sees the pages fetched now, not the ones a resumed run reads back. `keep`,
    if given, trims each customer before its page is stored (and before `on_page` sees
    it): it must give the same for a customer it already trimmed, since a resumed run's
    stored pages are read back through it again. `held`, if given, receives the stored
    customers of each page fetched now (a page fetched again replaces its entry). Raises
    RunInterrupted (after every worker stored its page) when `stop` is set.
    """
    checkpoints = store.windows(listing_id)
    if not checkpoints:
        raise ValueError(f"listing {listing_id} has no windows: start it with start_listing")
    stored = sum(c.rows for c in checkpoints)
    if stored and on_resume is not None:
        on_resume(stored, sum(c.pages for c in checkpoints))
    tick = advance or (lambda _n: None)
    tick(stored)
    queue = _Queue(
        checkpoints,
        max(1, workers),
        PLANNED_MIN_SPLIT_PAGES if planned else MIN_SPLIT_PAGES,
    )
    queue.bottom = bottom
    pager = _Pager(
        gateway,
        store,
        listing_id,
        work_dir,
        queue,
        expand=expand,
        stop=stop,
        advance=tick,
        on_page=on_page,
        file_mode=file_mode,
        keep=keep,
        held=held,
    )
    try:
        if queue.waiting:
            with _rare_full_collections():
                _dispatch(queue, pager)
    except BaseException:
        # The pages stored so far keep their bookmarks; the listing's own error wins.
        with contextlib.suppress(Exception):
            pager.writer.close()
        raise
    pager.writer.close()
    finished = store.windows(listing_id)
    if not all(c.done for c in finished):
        log.warning(
            "listing stopped at a checkpoint",
            windows_done=sum(c.done for c in finished),
            windows=len(finished),
            customers_stored=sum(c.rows for c in finished),
        )
        raise RunInterrupted(
            "stopped on request after storing the current pages; "
            "run the job again with --resume to continue"
        )
    log.info("listing done", windows=len(finished), windows_cut=pager.splits)
    return finished


# The oldest generation's threshold while pages arrive (Python's default is 10).
_LISTING_GEN2_THRESHOLD = 1_000
_gc_lock = threading.Lock()
_gc_listings = 0
_gc_saved: tuple[int, ...] = ()


@contextlib.contextmanager
def _rare_full_collections() -> Iterator[None]:
    """Full collections made rare while a listing runs. The customers a job keeps as
    pages arrive (and the loaded libraries) are long-lived and hold no cycles, yet each
    full collection walks all of them, pausing every thread; young garbage (a request's
    cycles) is still collected as usual. Process-wide, so counted across listings and
    restored when the last one ends."""
    global _gc_listings, _gc_saved
    with _gc_lock:
        if _gc_listings == 0:
            _gc_saved = gc.get_threshold()
            young, middle = _gc_saved[0], _gc_saved[1]
            gc.set_threshold(young, middle, max(_LISTING_GEN2_THRESHOLD, _gc_saved[2]))
        _gc_listings += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_listings -= 1
            if _gc_listings == 0:
                gc.set_threshold(*_gc_saved)


def _dispatch(queue: _Queue, pager: _Pager) -> None:
    """Hand waiting windows to workers until none waits and none runs, or one fails."""
    errors: list[BaseException] = []

    def finished(window: int, future: Future[None]) -> None:
        with queue.cond:
            queue.running.discard(window)
            error = future.exception()
            if error is not None:
                errors.append(error)
            queue.cond.notify_all()

    def may_start() -> bool:
        if not queue.waiting or len(queue.running) >= queue.workers:
            return False
        # Until a page shows the server takes `created`, one window at a time: a server
        # that rejects it is paged by one cursor, not by every window from the start.
        return pager.gateway.created_filter_supported is True or not queue.running

    with ThreadPoolExecutor(queue.workers, "listing") as pool:
        while True:
            with queue.cond:
                while not (errors or pager.stopping() or may_start() or not queue.running):
                    # A stop request does not notify: look again now and then.
                    queue.cond.wait(timeout=0.5)
                if errors or pager.stopping() or (not queue.waiting and not queue.running):
                    break
                if not may_start():
                    continue
                checkpoint = queue.waiting.pop(0)
                checkpoint = queue.latest.get(checkpoint.window, checkpoint)
                queue.running.add(checkpoint.window)
            # Each worker runs in a copy of this context: its logs carry run_id and job.
            future = pool.submit(contextvars.copy_context().run, pager.page_window, checkpoint)
            future.add_done_callback(functools.partial(finished, checkpoint.window))
    if errors:
        raise errors[0]
