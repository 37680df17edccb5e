"""A run's work folder: the customer listing's pages as Parquet parts, for resuming.

`<out>/<job>/.work-<listing id>/w<window>-p<page>.parquet`, one part per page, each
written under a temporary name, fsynced and renamed, so a part that exists is whole.
The folder is hidden and apart from the report folder, which still appears whole at
the end; it holds personal data, so it is owner-only and removed once the report is in
place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from reports.atomic import dir_mode_for, fsync_dir

__all__ = [
    "WORK_PREFIX",
    "read_part_texts",
    "read_parts",
    "remove_work_dir",
    "work_dir_for",
    "write_part",
]

WORK_PREFIX = ".work-"
_SCHEMA = pa.schema([("id", pa.string()), ("created", pa.int64()), ("record", pa.string())])


def work_dir_for(out_dir: Path, job: str, listing_id: str) -> Path:
    return Path(out_dir) / job / f"{WORK_PREFIX}{listing_id}"


def _part_name(window: int, page: int) -> str:
    return f"w{window:03d}-p{page:06d}.parquet"


def write_part(
    work_dir: Path,
    window: int,
    page: int,
    records: Sequence[Mapping[str, Any]],
    *,
    file_mode: int = 0o600,
) -> Path:
    """Store one page; an older part of the same name (a page fetched again) is replaced."""
    work_dir.mkdir(mode=dir_mode_for(file_mode), parents=True, exist_ok=True)
    table = pa.table(
        {
            "id": [str(r["id"]) for r in records],
            "created": [int(r.get("created") or 0) for r in records],
            "record": [json.dumps(r, separators=(",", ":"), sort_keys=True) for r in records],
        },
        schema=_SCHEMA,
    )
    final = work_dir / _part_name(window, page)
    temp = work_dir / f".{final.name}.tmp-{os.getpid()}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file_mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
        fsync_dir(work_dir)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return final


def read_parts(work_dir: Path, pages: Iterable[tuple[int, int]]) -> list[dict[str, Any]]:
    """The records of the first `n` pages of each `(window, n)`, in window then page order.

    Parts past a window's checkpoint (stored, but killed before the bookmark moved)
    are ignored: that page is fetched again.
    """
    records: list[dict[str, Any]] = []
    for window, count in pages:
        for page in range(count):
            path = work_dir / _part_name(window, page)
            table = pq.read_table(path, columns=["record"])
            records.extend(json.loads(text) for text in table.column("record").to_pylist())
    return records


def read_part_texts(work_dir: Path, pages: Iterable[tuple[int, int]]) -> pa.ChunkedArray:
    """The stored JSON text of every record of the first `n` pages of each `(window, n)`,
    in window then page order, as one Arrow column: read in C++, no Python object per row."""
    paths = [
        str(work_dir / _part_name(window, page)) for window, count in pages for page in range(count)
    ]
    if not paths:
        return pa.chunked_array([], type=pa.string())
    table = pq.ParquetDataset(paths).read(columns=["record"], use_threads=True)
    return table.column("record")


def remove_work_dir(work_dir: Path) -> None:
    shutil.rmtree(work_dir, ignore_errors=True)
