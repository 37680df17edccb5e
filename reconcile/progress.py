"""Progress: a bar on a terminal (rich), throttled progress events in the logs otherwise.

A job asks for `progress("listing customers", total=None)` and calls the returned
function with how many items it just finished. On a terminal that draws a bar, and log
lines are printed above it meanwhile rather than through it. Under cron or Kubernetes
(stderr not a terminal) a long phase logs a `progress` event at most once per
`EVENT_EVERY_SECONDS`: items done, steps (pages for a listing), rate and, when the
total is known, the estimated time left; a phase shorter than that logs none.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

import structlog

from reconcile.logs import get_logger, logging_through

__all__ = ["EVENT_EVERY_SECONDS", "Advance", "ProgressEvents", "progress"]

Advance = Callable[[int], None]

EVENT_EVERY_SECONDS = 10.0

log = get_logger(__name__)


class ProgressEvents:
    """The `advance` of a phase without a terminal: counts, and logs now and then."""

    def __init__(
        self,
        description: str,
        total: int | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        every: float = EVENT_EVERY_SECONDS,
    ) -> None:
        self._description = description
        self._total = total
        self._clock = clock
        self._every = every
        self._lock = threading.Lock()  # workers of one listing advance it from their threads
        self._started = clock()
        self._last_event = self._started
        self.done = 0
        self.steps = 0
        # Workers advance it from their threads, which do not carry the run's context.
        self._context = structlog.contextvars.get_contextvars()

    def __call__(self, count: int) -> None:
        with self._lock:
            self.done += count
            self.steps += 1
            now = self._clock()
            if now - self._last_event < self._every:
                return
            self._last_event = now
            done, steps, elapsed = self.done, self.steps, now - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        fields: dict[str, object] = {
            "phase": self._description,
            "done": done,
            "rate_per_second": round(rate, 1),
            "elapsed_seconds": round(elapsed, 1),
        }
        if self._total is None:
            fields["pages"] = steps  # a listing advances once per page
        else:
            fields["total"] = self._total
            left = max(self._total - done, 0)
            fields["eta_seconds"] = round(left / rate, 1) if rate > 0 else None
        with structlog.contextvars.bound_contextvars(**self._context):
            log.info("progress", **fields)


@contextmanager
def progress(
    description: str,
    *,
    total: int | None = None,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Advance]:
    """A bar (or a counter when `total` is unknown) on `stream` (stderr) if it is a terminal;
    throttled progress events in the log otherwise."""
    out = stream if stream is not None else sys.stderr
    if not out.isatty():
        yield ProgressEvents(description, total, clock=clock)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        (SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,}"))
        if total is None
        else (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    )
    lock = threading.Lock()  # workers of one listing advance it from their threads
    console = Console(file=out, force_terminal=True)
    with (
        Progress(*columns, TimeElapsedColumn(), console=console, transient=False) as bar,
        logging_through(console),
    ):
        task = bar.add_task(description, total=total)

        def advance(count: int) -> None:
            with lock:
                bar.advance(task, count)

        yield advance
