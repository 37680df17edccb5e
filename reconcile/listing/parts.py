"""A run's work folder: the customer listing's pages as stored, for resuming.

`<out>/<job>/.work-<listing id>/w<window>-p<page>.json`, one file per page-worth of
customers (a JSON list object whose `data` holds them, as Stripe sends a page), each
written under a temporary name, fsynced and renamed, so a part that exists is whole. The folder
is hidden and apart from the report folder, which still appears whole at the end; it
holds every customer's personal data and only this tool reads it, so it is owner-only
(folder 0700, parts 0600) whatever `[reports] file_mode` lets others read of the
reports, and removed once the report is in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from reconcile.atomic import fsync_dir

__all__ = [
    "WORK_DIR_MODE",
    "WORK_PREFIX",
    "page_body",
    "read_part_bodies",
    "read_parts",
    "remove_work_dir",
    "work_dir_for",
    "write_part",
]

WORK_PREFIX = ".work-"
WORK_DIR_MODE = 0o700


def work_dir_for(out_dir: Path, job: str, listing_id: str) -> Path:
    return Path(out_dir) / job / f"{WORK_PREFIX}{listing_id}"


def _part_name(window: int, page: int) -> str:
    return f"w{window:03d}-p{page:06d}.json"


def page_body(records: Sequence[Mapping[str, Any]]) -> bytes:
    """A page-worth of customers as a list object's JSON, as Stripe sends a page."""
    # default=str: a value the SDK holds as a Decimal is a string in Stripe's JSON.
    body = {"object": "list", "data": list(records)}
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def write_part(
    work_dir: Path,
    window: int,
    page: int,
    body: bytes,
    *,
    file_mode: int = 0o600,
    sync_dir: bool = True,
) -> Path:
    """Store one page's JSON; an older part of the same name (a page fetched again) is
    replaced. With `sync_dir` false the caller makes the rename durable (`fsync_dir`)
    before it relies on the part, e.g. once for a batch of pages. Of `file_mode` (the
    reports' mode) a part keeps the owner's bits only."""
    final = work_dir / _part_name(window, page)
    temp = work_dir / f".{final.name}.tmp-{os.getpid()}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    part_mode = file_mode & 0o600
    try:
        fd = os.open(temp, flags, part_mode)
    except FileNotFoundError:
        # The first page of a run creates the folder (one check per run, not per page).
        work_dir.mkdir(mode=WORK_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(work_dir, WORK_DIR_MODE)  # exactly, whatever the umask
        fd = os.open(temp, flags, part_mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
        if sync_dir:
            fsync_dir(work_dir)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return final


def _read_body(work_dir: Path, window: int, page: int) -> bytes:
    return (work_dir / _part_name(window, page)).read_bytes()


def read_part_bodies(work_dir: Path, pages: Iterable[tuple[int, int]]) -> Iterator[bytes]:
    """The stored JSON of the first `n` pages of each `(window, n)`, in window then page
    order. Parts past a window's checkpoint (stored, but killed before the bookmark
    moved) are ignored: that page is fetched again."""
    for window, count in pages:
        for page in range(count):
            yield _read_body(work_dir, window, page)


def read_parts(
    work_dir: Path,
    pages: Iterable[tuple[int, int]],
    keep: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    held: Mapping[tuple[int, int], list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """The customers of the first `n` pages of each `(window, n)`, as dicts, in window
    then page order; `keep(record)`, if given, is applied page by page, so only what it
    returns is held for the whole listing. A page in `held` (one this run fetched and
    stored, kept as stored) is taken from there: not read, decoded or trimmed again."""
    records: list[dict[str, Any]] = []
    for window, count in pages:
        for page in range(count):
            kept = held.get((window, page)) if held is not None else None
            if kept is not None:
                records.extend(kept)
                continue
            data = json.loads(_read_body(work_dir, window, page))["data"]
            records.extend(data if keep is None else map(keep, data))
    return records


def remove_work_dir(work_dir: Path) -> None:
    shutil.rmtree(work_dir, ignore_errors=True)
