"""Write a folder so that readers see all of it or none of it.

The folder is filled under a hidden sibling name, every file and the folder itself
are fsynced, and only then is it renamed into place: a rename within one file
system is atomic, so a reader (or a crashed run) never leaves a half report behind
under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

__all__ = [
    "STALE_STAGING_SECONDS",
    "StagedFolder",
    "dir_mode_for",
    "fsync_dir",
    "staged_folder",
    "staging_name",
    "sweep_stale_staging",
]

# No report takes a day to write; a staging folder that old was left by a killed run.
STALE_STAGING_SECONDS = 24 * 3600
_STAGING_NAME = re.compile(r"^\.(?P<run>[^/]+)\.tmp-(?P<pid>[0-9]+)$")


def staging_name(run_id: str, pid: int) -> str:
    """The hidden sibling a run folder is filled under: `.<run id>.tmp-<pid>`."""
    return f".{run_id}.tmp-{pid}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def sweep_stale_staging(parent: Path, *, now: float | None = None) -> list[Path]:
    """Remove staging folders left in `parent` by killed runs; return what was removed.

    A staging folder is stale when its process is gone, or (pids are reused, and
    another container may share the folder) when it is older than a day. Our own
    process's folders are never touched. Such leftovers hold personal data, so
    they should not linger hidden.
    """
    if not parent.is_dir():
        return []
    now = time.time() if now is None else now
    removed = []
    for entry in parent.iterdir():
        match = _STAGING_NAME.match(entry.name)
        if match is None or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(match.group("pid"))
        if pid == os.getpid():
            continue
        try:
            old = now - entry.stat().st_mtime > STALE_STAGING_SECONDS
        except FileNotFoundError:  # another sweeper got there first
            continue
        if old or not _pid_alive(pid):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def dir_mode_for(file_mode: int) -> int:
    """A folder mode that lets exactly the file mode's readers list and enter it."""
    mode = file_mode & 0o777
    for read_bit, exec_bit in ((0o400, 0o100), (0o040, 0o010), (0o004, 0o001)):
        if mode & read_bit:
            mode |= exec_bit
    return mode | 0o700  # the owner must always be able to finish and remove it


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (new names, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedFolder:
    """The temporary folder being filled; files are created with one fixed mode."""

    def __init__(self, path: Path, file_mode: int) -> None:
        self.path = path
        self.file_mode = file_mode

    def open_text(self, name: str) -> contextlib.AbstractContextManager[IO[str]]:
        """A new UTF-8 text file in the folder, created with the file mode, fsynced on close."""
        return _synced_file(self._new_path(name), self.file_mode, "text")

    def open_binary(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A new binary file in the folder, created with the file mode, fsynced on close."""
        return _synced_file(self._new_path(name), self.file_mode, "binary")

    def _new_path(self, name: str) -> Path:
        if "/" in name or name.startswith(".") or not name:
            raise ValueError(f"report file name {name!r} must be a plain, visible file name")
        return self.path / name

    def write_text(self, name: str, text: str) -> None:
        with self.open_text(name) as handle:
            handle.write(text)


@contextlib.contextmanager
def _synced_file(path: Path, file_mode: int, kind: Literal["text", "binary"]) -> Iterator[IO[Any]]:
    # O_EXCL: a staged folder is fresh, so an existing name is a bug, not something to overwrite.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode)
    # The umask may have narrowed the mode; set exactly what was asked for.
    os.fchmod(fd, file_mode)
    if kind == "text":
        handle: IO[Any] = os.fdopen(fd, "w", encoding="utf-8", newline="")
    else:
        handle = os.fdopen(fd, "wb")
    with handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def staged_folder(final: Path, temp_name: str, file_mode: int) -> Iterator[StagedFolder]:
    """Fill a hidden sibling of `final`, then rename it to `final`; on any error remove it.

    The parent of `final` is created if needed. The rename refuses to replace an
    existing folder, so a run id is never overwritten.
    """
    folder_mode = dir_mode_for(file_mode)
    parent = final.parent
    parent.mkdir(mode=folder_mode, parents=True, exist_ok=True)
    temp = parent / temp_name
    if final.exists():
        raise FileExistsError(errno.EEXIST, "the run folder already exists", str(final))
    os.mkdir(temp, folder_mode)
    try:
        os.chmod(temp, folder_mode)
        yield StagedFolder(temp, file_mode)
        fsync_dir(temp)
        # os.rename onto an existing non-empty folder fails, which is what we want.
        os.rename(temp, final)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
