"""Owner-only state: the SQLite state DB (audit rows hold emails) and the listing's work folder."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog

from reconcile.listing.parts import write_part
from reconcile.state.store import StateStore


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def everyone_reads_by_default() -> Iterator[None]:
    """The usual umask (022): files created without care come out world-readable."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("everyone_reads_by_default")
def test_a_new_state_database_is_owner_only_with_its_companions(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(f"sqlite:///{path}")
    try:
        assert mode_of(path) == 0o600
        # SQLite gives its -wal and -shm files the database's mode.
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        store.start_run("20261121T210501Z-aaaaaa", "reconcile", mode="test")
        companions = [tmp_path / "state.db-wal", tmp_path / "state.db-shm"]
        assert all(p.exists() for p in companions)
        assert [mode_of(p) for p in companions] == [0o600, 0o600]
    finally:
        store.close()


@pytest.mark.usefixtures("everyone_reads_by_default")
def test_leftover_companions_of_a_new_database_are_made_owner_only(tmp_path: Path) -> None:
    # Left by an earlier database of that name: SQLite reuses them as they are.
    leftovers = [tmp_path / "state.db-wal", tmp_path / "state.db-shm"]
    for leftover in leftovers:
        leftover.write_bytes(b"")
        leftover.chmod(0o644)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        store.start_run("20261121T210501Z-aaaaaa", "reconcile", mode="test")
        assert [mode_of(p) for p in leftovers] == [0o600, 0o600]
    finally:
        store.close()


def test_an_existing_database_keeps_its_mode_and_a_world_readable_one_is_warned_about(
    tmp_path: Path,
) -> None:
    owner_dir = tmp_path / "home-of-jane-doe"
    owner_dir.mkdir()
    path = owner_dir / "state.db"
    StateStore(f"sqlite:///{path}").close()
    path.chmod(0o644)

    with structlog.testing.capture_logs() as logs:
        StateStore(f"sqlite:///{path}").close()

    assert mode_of(path) == 0o644  # the owner's choice stands
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert "readable by every user" in warning["event"]
    assert warning["file"] == "state.db"
    assert "jane-doe" not in repr(logs)

    path.chmod(0o640)
    with structlog.testing.capture_logs() as quiet:
        StateStore(f"sqlite:///{path}").close()
    assert [e for e in quiet if e["log_level"] == "warning"] == []


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_state_database_creates_no_file(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = StateStore(url)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
    finally:
        store.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("everyone_reads_by_default")
@pytest.mark.parametrize("file_mode", [0o600, 0o640, 0o644])
def test_the_listing_work_folder_is_owner_only_whatever_the_reports_mode(
    tmp_path: Path, file_mode: int
) -> None:
    work_dir = tmp_path / "reconcile" / ".work-20261121T210501Z-3f9a1c"
    part = write_part(work_dir, 0, 0, b'{"object":"list","data":[]}', file_mode=file_mode)
    assert mode_of(work_dir) == 0o700
    assert mode_of(part) == 0o600
