"""The listing's work folder: pages stored as sent, owner-only."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from reconcile.listing.parts import page_body, read_part_bodies, read_parts, write_part

RECORDS = [
    {"id": "cus_2", "object": "customer", "created": 20, "email": "zoë@example.com"},
    {"id": "cus_1", "object": "customer", "created": 10, "email": None},
]


def test_a_page_is_stored_as_sent_in_an_owner_only_folder(tmp_path: Path) -> None:
    work_dir = tmp_path / "job" / ".work-run1"
    body = json.dumps({"object": "list", "data": RECORDS, "has_more": False}, indent=2).encode()

    path = write_part(work_dir, 3, 0, body)

    assert path.read_bytes() == body
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(work_dir.stat().st_mode) == 0o700
    assert list(read_part_bodies(work_dir, [(3, 1)])) == [body]
    assert read_parts(work_dir, [(3, 1)]) == RECORDS
    # No temporary file is left beside the part.
    assert [p.name for p in work_dir.iterdir()] == [path.name]


def test_a_page_fetched_again_replaces_the_stored_one(tmp_path: Path) -> None:
    write_part(tmp_path, 0, 0, page_body(RECORDS[:1]))
    write_part(tmp_path, 0, 0, page_body(RECORDS))
    assert read_parts(tmp_path, [(0, 1)]) == RECORDS


def test_parts_past_a_windows_checkpoint_are_not_read(tmp_path: Path) -> None:
    write_part(tmp_path, 0, 0, page_body(RECORDS[:1]))
    write_part(tmp_path, 0, 1, page_body(RECORDS[1:]))  # stored, bookmark not moved yet
    assert read_parts(tmp_path, [(0, 1)]) == RECORDS[:1]
