"""The customer listing of a run: `created` windows paged concurrently, checkpointed, resumable.

Every page is stored as a Parquet part in the run's work folder (reports.parts) and
only then is its window's cursor moved on in the state database (reconcile.checkpoints),
the way tap-stripe moves a bookmark only after the data is stored. A run killed at any
point resumes from the last stored page of each window, without fetching it again.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from reconcile.checkpoints import CheckpointStore, RunInterrupted, WindowCheckpoint
from reconcile.gateway import StripeGateway
from reconcile.logs import get_logger
from reconcile.pager import iter_customer_window
from reconcile.progress import Advance
from reports.parts import read_parts, write_part

__all__ = ["DAY", "PAGE_SIZE", "STRIPE_FLOOR", "list_windows", "window_bounds", "workers_for"]

log = get_logger(__name__)

DAY = 86_400
# No Stripe customer was created before 2010 (Stripe's launch); the oldest window is
# open below anyway, so this only shapes the split.
STRIPE_FLOOR = 1_262_304_000
PAGE_SIZE = 100
# A list page takes about this long at Stripe; enough workers keep the limiter fed.
_PAGE_SECONDS = 0.3


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


def workers_for(requests_per_second: float, windows: int) -> int:
    """Enough concurrent cursors to use the rate limit at Stripe's page latency."""
    return max(1, min(windows, round(requests_per_second * _PAGE_SECONDS)))


class _Pager:
    def __init__(
        self,
        gateway: StripeGateway,
        store: CheckpointStore,
        listing_id: str,
        work_dir: Path,
        *,
        expand: Sequence[str],
        stop: threading.Event | None,
        advance: Advance,
        file_mode: int,
    ) -> None:
        self.gateway = gateway
        self.store = store
        self.listing_id = listing_id
        self.work_dir = work_dir
        self.expand = expand
        self.stop = stop
        self.advance = advance
        self.file_mode = file_mode
        # Set when any worker fails, so the others stop at their next page.
        self.abort = threading.Event()

    def _stopping(self) -> bool:
        return self.abort.is_set() or (self.stop is not None and self.stop.is_set())

    def _store(self, window: int, page: int, records: list[dict[str, Any]]) -> None:
        write_part(self.work_dir, window, page, records, file_mode=self.file_mode)

    def page_window(self, checkpoint: WindowCheckpoint) -> None:
        page, rows, last_id = checkpoint.pages, checkpoint.rows, checkpoint.last_id
        batch: list[dict[str, Any]] = []
        customers = iter_customer_window(
            self.gateway,
            checkpoint.created_gte,
            checkpoint.created_lt,
            starting_after=last_id,
            expand=self.expand,
        )
        try:
            for customer in customers:
                batch.append(customer)
                if len(batch) < PAGE_SIZE:
                    continue
                self._store(checkpoint.window, page, batch)
                page, rows, last_id = page + 1, rows + len(batch), batch[-1]["id"]
                self.store.save_page(
                    self.listing_id,
                    checkpoint.window,
                    last_id=last_id,
                    pages=page,
                    rows=rows,
                    done=False,
                )
                self.advance(len(batch))
                batch = []
                # Checked between pages: what was fetched is stored, nothing is half-done.
                if self._stopping():
                    return
        except BaseException:
            self.abort.set()
            raise
        if batch:
            self._store(checkpoint.window, page, batch)
            page, rows, last_id = page + 1, rows + len(batch), batch[-1]["id"]
            self.advance(len(batch))
        self.store.save_page(
            self.listing_id, checkpoint.window, last_id=last_id, pages=page, rows=rows, done=True
        )


def list_windows(
    gateway: StripeGateway,
    store: CheckpointStore,
    listing_id: str,
    work_dir: Path,
    *,
    workers: int = 4,
    expand: Sequence[str] = (),
    stop: threading.Event | None = None,
    advance: Advance | None = None,
    file_mode: int = 0o600,
    on_resume: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Every customer of the listing, newest window first, fetching only what is not stored.

    Raises RunInterrupted (after every worker stored its page) when `stop` is set.
    """
    checkpoints = store.windows(listing_id)
    if not checkpoints:
        raise ValueError(f"listing {listing_id} has no windows: start it with start_listing")
    stored = sum(c.rows for c in checkpoints)
    if stored and on_resume is not None:
        on_resume(stored, sum(c.pages for c in checkpoints))
    tick = advance or (lambda _n: None)
    tick(stored)
    pager = _Pager(
        gateway,
        store,
        listing_id,
        work_dir,
        expand=expand,
        stop=stop,
        advance=tick,
        file_mode=file_mode,
    )
    pending = [c for c in checkpoints if not c.done]
    if pending:
        with ThreadPoolExecutor(max(1, min(workers, len(pending))), "listing") as pool:
            # Each worker runs in a copy of this context: its logs carry run_id and job.
            futures = [
                pool.submit(contextvars.copy_context().run, pager.page_window, c)
                for c in pending
            ]
            for future in futures:
                # A failing worker sets `abort`, so the others stop at their next page.
                error = future.exception()
                if error is not None:
                    raise error
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
    return read_parts(work_dir, [(c.window, c.pages) for c in finished])
