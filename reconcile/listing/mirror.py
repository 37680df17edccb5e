"""The customer mirror: the customers a job needs, as its last run left them, and its watermark.

One Parquet file per job and mode (`<job>-<mode>.parquet`), its description (watermark,
identity, the events already applied) in the file's own schema metadata, so the rows and
the watermark that says what they reflect are replaced together by one rename: a run killed
while saving leaves the old mirror whole, never new rows under an old watermark.

Where: `[incremental] dir`, else beside a SQLite state database (the mirror is state: the
place a deployment already keeps, back up and protects, unlike report folders that are
emailed, rotated and cleaned), else `[reports] out`/.state when the state database is a
server. Owner-only: files 0600, folder 0700 (it holds emails and names).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.engine import make_url

from reconcile.atomic import fsync_dir
from reconcile.logs import get_logger
from reconcile.rules.events import MirrorIdentity
from reconcile.settings import Settings

__all__ = [
    "MIRROR_FORMAT",
    "MirrorMeta",
    "account_of",
    "load_known_missing",
    "load_mirror",
    "mirror_dir",
    "mirror_path",
    "read_meta",
    "save_known_missing",
    "save_mirror",
    "tool_version",
]

log = get_logger(__name__)

# Bumped when the file's columns or meaning change: an older mirror then forces a full run.
MIRROR_FORMAT = 1
_META_KEY = b"stripe_reconcile_mirror"
FILE_MODE = 0o600
DIR_MODE = 0o700


@dataclass(frozen=True)
class MirrorMeta:
    identity: MirrorIdentity
    # Stripe's clock: the newest event `created` seen, or the second before the full
    # listing's bound.
    # The next run reads events from `watermark - overlap_seconds`.
    watermark: int
    full_listed_at: float  # the run clock when the last full listing started
    updated_at: float
    # Events at or after `watermark - overlap` already in the rows: not applied twice.
    applied_event_ids: tuple[str, ...]
    customers: int
    # Customers known deleted, with the run clock when that was learned: a late event
    # about one (its creation listed after its deletion) must not bring it back. Kept the
    # 30 days Stripe keeps events.
    tombstones: tuple[tuple[str, float], ...] = ()

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "format": MIRROR_FORMAT}, sort_keys=True)

    @staticmethod
    def from_json(text: str | bytes) -> MirrorMeta | None:
        raw = json.loads(text)
        if raw.get("format") != MIRROR_FORMAT:
            return None
        identity = raw["identity"]
        return MirrorMeta(
            identity=MirrorIdentity(
                job=str(identity["job"]),
                mode=str(identity["mode"]),
                account=str(identity["account"]),
                tool_version=str(identity["tool_version"]),
                metadata_keys=tuple(identity["metadata_keys"]),
            ),
            watermark=int(raw["watermark"]),
            full_listed_at=float(raw["full_listed_at"]),
            updated_at=float(raw["updated_at"]),
            applied_event_ids=tuple(raw["applied_event_ids"]),
            customers=int(raw["customers"]),
            tombstones=tuple((str(i), float(t)) for i, t in raw.get("tombstones", ())),
        )


def tool_version() -> str:
    try:
        version = package_metadata.version("stripe-reconcile")
    except package_metadata.PackageNotFoundError:
        version = "unknown"
    return f"{version}+mirror{MIRROR_FORMAT}"


def account_of(api_key: str) -> str:
    """A hash standing for the key's account (the key itself never lands on disk)."""
    return hashlib.sha256(api_key.strip().encode()).hexdigest()[:24]


def mirror_dir(settings: Settings) -> Path:
    if settings.incremental.dir:
        return Path(settings.incremental.dir)
    url = make_url(settings.state.url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(str(url.database)).absolute().parent / "stripe-reconcile-mirror"
    return Path(settings.reports.out) / ".state" / "mirror"


def mirror_path(settings: Settings, job: str, mode: str) -> Path:
    return mirror_dir(settings) / f"{job}-{mode}.parquet"


def read_meta(path: Path) -> MirrorMeta | None:
    """The mirror's description, from the file's footer alone; None when there is no usable
    mirror (missing, damaged, of another format): the run then lists in full."""
    if not path.is_file():
        return None
    try:
        found = pq.read_schema(path).metadata or {}
        raw = found.get(_META_KEY)
        return None if raw is None else MirrorMeta.from_json(raw)
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        log.warning("the customer mirror cannot be read: listing in full", error=type(exc).__name__)
        return None


def _frame_from_table(table: pa.Table) -> pd.DataFrame:
    # Text columns as pandas' NA-aware Arrow strings (what the listing's snapshot uses),
    # one chunk each: no Python object per customer.
    columns: dict[str, Any] = {}
    for name in table.column_names:
        column = table.column(name)
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        kind = array.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
            columns[name] = pd.arrays.ArrowStringArray(array.cast(pa.large_string()))
        else:
            columns[name] = array.to_numpy(zero_copy_only=False)
    return pd.DataFrame(columns)


def load_mirror(path: Path) -> pd.DataFrame:
    return _frame_from_table(pq.read_table(path))


def _table_of(frame: pd.DataFrame) -> pa.Table:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # Text columns all-null in this frame must still be text in the file.
    fields = [
        pa.field(f.name, pa.large_string()) if pa.types.is_null(f.type) else f for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def save_mirror(path: Path, frame: pd.DataFrame, meta: MirrorMeta) -> None:
    """Replace the mirror at once: a temporary file in the same folder, fsynced, renamed."""
    folder = path.parent
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(folder, DIR_MODE)
    table = _table_of(frame)
    table = table.replace_schema_metadata({_META_KEY: meta.to_json().encode()})
    handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, FILE_MODE)
        with os.fdopen(handle, "wb") as sink:
            pq.write_table(table, sink, compression="zstd")
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(folder)


def _missing_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".parquet") + ".missing.json")


def load_known_missing(path: Path, account: str, mode: str) -> dict[str, str]:
    """What earlier runs learned of the linked customer ids the listing lacks (deleted,
    absent, of the other mode): facts about an id that never change, so an incremental
    run looks up only the new ones."""
    found = _missing_path(path)
    try:
        raw = json.loads(found.read_text())
    except (OSError, ValueError):
        return {}
    if raw.get("account") != account or raw.get("mode") != mode:
        return {}
    causes = raw.get("causes")
    return {str(k): str(v) for k, v in causes.items()} if isinstance(causes, dict) else {}


def save_known_missing(path: Path, account: str, mode: str, causes: dict[str, str]) -> None:
    target = _missing_path(path)
    target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    text = json.dumps({"account": account, "mode": mode, "causes": causes}, sort_keys=True)
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, FILE_MODE)
        with os.fdopen(handle, "w") as sink:
            sink.write(text)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
