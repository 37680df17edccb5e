from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from reconcile.atomic import STALE_STAGING_SECONDS, dir_mode_for, sweep_stale_staging
from reports.writer import write_run_reports

GONE_PID = 2**31 - 2  # above any pid_max, so never a live process


def _staging(parent: Path, run_id: str, pid: int) -> Path:
    folder = parent / f".{run_id}.tmp-{pid}"
    folder.mkdir(parents=True)
    (folder / "findings.csv").write_text("kind\n")
    return folder


def test_staging_of_a_dead_process_is_swept(tmp_path: Path) -> None:
    dead = _staging(tmp_path, "r1", GONE_PID)

    assert sweep_stale_staging(tmp_path) == [dead]
    assert not dead.exists()


def test_staging_of_a_live_process_stays_until_it_is_a_day_old(tmp_path: Path) -> None:
    live = _staging(tmp_path, "r1", os.getppid())

    assert sweep_stale_staging(tmp_path) == []
    assert live.exists()
    later = time.time() + STALE_STAGING_SECONDS + 60
    assert sweep_stale_staging(tmp_path, now=later) == [live]
    assert not live.exists()


def test_sweeping_leaves_our_own_staging_and_everything_else(tmp_path: Path) -> None:
    ours = _staging(tmp_path, "r1", os.getpid())
    finished = tmp_path / "20261121T210501Z-3f9a1c"
    finished.mkdir()
    other_hidden = tmp_path / ".cache"
    other_hidden.mkdir()
    lookalike_file = tmp_path / f".r2.tmp-{GONE_PID}"
    lookalike_file.write_text("a file, not a staging folder")

    far_future = time.time() + 10 * STALE_STAGING_SECONDS
    assert sweep_stale_staging(tmp_path, now=far_future) == []
    assert ours.exists()
    assert finished.exists()
    assert other_hidden.exists()
    assert lookalike_file.exists()


def test_writing_a_run_sweeps_leftovers_of_killed_runs(tmp_path: Path) -> None:
    leftover = _staging(tmp_path / "reconcile", "20261120T000000Z-000000", GONE_PID)

    run_dir = write_run_reports(
        tmp_path, "reconcile", "20261121T210501Z-3f9a1c", pd.DataFrame(), {"mode": "test"}
    )

    assert not leftover.exists()
    assert [p.name for p in (tmp_path / "reconcile").iterdir()] == [run_dir.name]


@pytest.mark.parametrize(
    ("file_mode", "folder_mode"), [(0o600, 0o700), (0o640, 0o750), (0o644, 0o755)]
)
def test_folder_mode_follows_the_file_mode(file_mode: int, folder_mode: int) -> None:
    assert dir_mode_for(file_mode) == folder_mode
