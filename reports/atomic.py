"""Write a folder so that readers see all of it or none of it.

The folder is filled under a hidden sibling name, every file and the folder itself
are fsynced, and only then is it renamed into place: a rename within one file
system is atomic, so a reader (or a crashed run) never leaves a half report behind
under the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

__all__ = ["StagedFolder", "dir_mode_for", "fsync_dir", "staged_folder"]


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
        raise FileExistsError(f"{final} already exists")
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
