"""Progress bars on a terminal (rich), nothing at all under cron or Kubernetes.

A job asks for `progress("listing customers", total=None)` and calls the returned
function with how many items it just finished. When stderr is not a terminal the
function does nothing, so the logs stay clean JSON lines.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Advance", "progress"]

Advance = Callable[[int], None]


def _ignore(_count: int) -> None:
    return None


@contextmanager
def progress(
    description: str, *, total: int | None = None, stream: TextIO | None = None
) -> Iterator[Advance]:
    """A bar (or a counter when `total` is unknown) on `stream` (stderr) if it is a terminal."""
    out = stream if stream is not None else sys.stderr
    if not out.isatty():
        yield _ignore
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
    with Progress(
        *columns,
        TimeElapsedColumn(),
        console=Console(file=out, force_terminal=True),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)

        def advance(count: int) -> None:
            with lock:
                bar.advance(task, count)

        yield advance
