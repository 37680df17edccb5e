"""The project's own state database: run records and lease locks (SQLAlchemy Core, any URL).

Opening the store brings the database's schema to this version's (creating it on a fresh
database, see reconcile.state.schema); every table is declared in reconcile.state.tables,
all named `stripe_reconcile_*` so that a state URL pointing at an application's database
can never collide with (or touch) its tables.

Times are stored as UTC. Every method that depends on the time takes `now`, and
falls back on the store's clock, so tests pin time without sleeping.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reconcile.errors import ConfigError, LockHeldError
from reconcile.logs import get_logger
from reconcile.state.schema import ensure_schema
from reconcile.state.tables import (
    TABLE_PREFIX,
    UTCDateTime,
    as_utc,
    locks_table,
    metadata,
    runs_table,
)

__all__ = [
    "TABLE_PREFIX",
    "Clock",
    "Lease",
    "LockRecord",
    "RunRecord",
    "RunStatus",
    "StateStore",
    "UTCDateTime",
    "lock_held_message",
    "locks_table",
    "metadata",
    "runs_table",
    "utc_now",
]

log = get_logger(__name__)

Clock = Callable[[], datetime]
_ERROR_MAX_CHARS = 2000


def utc_now() -> datetime:
    return datetime.now(UTC)


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    # Completed, but some of its actions failed (recorded in the audit log).
    PARTIAL = "partial"


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    job: str
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None
    mode: str | None
    counts: dict[str, int]
    requests: dict[str, int]
    error: str | None
    report_dir: str | None


@dataclass(frozen=True)
class LockRecord:
    job: str
    owner: str
    acquired_at: datetime
    expires_at: datetime


def _loads(text: str | None) -> dict[str, int]:
    return dict(json.loads(text)) if text else {}


def _dumps(counts: Mapping[str, int] | None) -> str | None:
    if counts is None:
        return None
    return json.dumps({str(k): int(v) for k, v in counts.items()}, sort_keys=True)


def _one_line(text: str | None) -> str | None:
    if text is None:
        return None
    line = " ".join(text.split())
    return line if len(line) <= _ERROR_MAX_CHARS else line[: _ERROR_MAX_CHARS - 1] + "…"


def _time_text(value: datetime) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _run_record(row: sa.Row[Any]) -> RunRecord:
    return RunRecord(
        run_id=row.run_id,
        job=row.job,
        status=RunStatus(row.status),
        started_at=row.started_at,
        finished_at=row.finished_at,
        mode=row.mode,
        counts=_loads(row.counts_json),
        requests=_loads(row.requests_json),
        error=row.error,
        report_dir=row.report_dir,
    )


def _safe_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL may hold a password anywhere: show none of it
        return "(unparsable URL)"


def _engine_options(url: str) -> dict[str, Any]:
    # The audit log and reminders bind customer ids and emails: a database error must not
    # carry them into a log or a traceback.
    options: dict[str, Any] = {"hide_parameters": True}
    backend = sa.engine.make_url(url).get_backend_name()
    if backend == "sqlite":
        # Writers queue on SQLite's file lock; wait for it rather than fail at once.
        return {**options, "connect_args": {"timeout": 30}}
    if backend == "postgresql":
        return {**options, "connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    return {**options, "pool_pre_ping": True}


# SQLite's own files beside the database: it creates them with the database's mode.
_SQLITE_COMPANIONS = ("-journal", "-wal", "-shm")


def _sqlite_file(url: sa.engine.URL) -> Path | None:
    """The file a SQLite URL opens, or None (another backend, or an in-memory database)."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if str(url.query.get("uri", "")).lower() in ("true", "1"):
        # A URI filename; memory and read-only databases create no file.
        mode = str(url.query.get("mode", ""))
        if not database.startswith("file:") or mode in ("memory", "ro") or "mode=" in database:
            return None
        database = database.removeprefix("file:").split("?", 1)[0]
    if database in ("", ":memory:"):
        return None
    return Path(database)


def _make_owner_only(path: Path) -> None:
    """Create the state database file owner-only (0600), with its companions where they
    exist: audit rows hold emails. An existing database keeps the mode its owner gave it,
    but one every local user may read is warned about."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            return  # a dangling link, say: SQLite says what is wrong with it
        if mode & stat.S_IROTH:
            # The file's name only: the folders above it may name a person.
            log.warning(
                "the state database is readable by every user of this machine",
                file=path.name,
                mode=f"{mode:o}",
                fix="chmod 600 it (and its -journal, -wal and -shm files)",
            )
        return
    except OSError:
        return  # a missing folder or no permission: SQLite says so, as [state] url
    try:
        os.fchmod(fd, 0o600)  # exactly, whatever the umask
    finally:
        os.close(fd)
    for suffix in _SQLITE_COMPANIONS:
        # Left by an earlier database of the same name: SQLite would reuse them as they are.
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.chmod(companion, 0o600)


def _upsert_of(dialect: str) -> Callable[[sa.Table], Any] | None:
    """The dialect's INSERT ... ON CONFLICT construct, or None where it has none. Only the
    engine's own dialect is imported: PostgreSQL's brings every driver module it knows."""
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    return None


class StateStore:
    """Runs and lease locks in the state database at `url` (its schema upgraded on open).

    Raises ConfigError naming `[state] url` when the URL is invalid, the database cannot
    be reached or written, or its schema is newer than this code's.
    """

    def __init__(self, url: str, *, clock: Clock = utc_now, atomic_upsert: bool = True) -> None:
        self._clock = clock
        safe = _safe_url(url)
        try:
            self.engine: Engine = sa.create_engine(url, **_engine_options(url))
        except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
            raise ConfigError(
                f"[state] url {safe} is not a usable SQLAlchemy URL ({exc}): "
                "use e.g. sqlite:///stripe-reconcile-state.db or postgresql+psycopg://host/db"
            ) from exc
        database_file = _sqlite_file(self.engine.url)
        if database_file is not None:
            _make_owner_only(database_file)
        # The single-statement upsert exists on SQLite and PostgreSQL; elsewhere (or when a
        # test asks) the portable insert-then-conditional-update path is used.
        self._upsert = _upsert_of(self.engine.dialect.name) if atomic_upsert else None
        try:
            ensure_schema(self.engine)
        except ConfigError:
            self.engine.dispose()
            raise
        except sa.exc.SQLAlchemyError as exc:
            self.engine.dispose()
            cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise ConfigError(
                f"[state] url {safe}: the state database cannot be opened ({cause}); "
                "check the URL, that the server is up and that this user may create tables"
            ) from exc

    def close(self) -> None:
        self.engine.dispose()

    def now(self) -> datetime:
        return as_utc(self._clock(), "the state store's clock")

    def _when(self, now: datetime | None) -> datetime:
        return self.now() if now is None else as_utc(now, "now")

    # Runs ---------------------------------------------------------------------------

    def start_run(
        self,
        run_id: str,
        job: str,
        *,
        mode: str | None = None,
        started_at: datetime | None = None,
    ) -> RunRecord:
        """Record a run as running; a run id already recorded is a ValueError."""
        values = {
            "run_id": run_id,
            "job": job,
            "status": RunStatus.RUNNING.value,
            "started_at": self._when(started_at),
            "mode": mode,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(runs_table.insert().values(**values))
        except sa.exc.IntegrityError as exc:
            raise ValueError(f"run id {run_id} is already recorded: use a new run id") from exc
        return self._require_run(run_id)

    def finish_run(
        self,
        run_id: str,
        status: RunStatus | str,
        counts: Mapping[str, int] | None = None,
        requests: Mapping[str, int] | None = None,
        error: str | None = None,
        report_dir: str | None = None,
        *,
        finished_at: datetime | None = None,
    ) -> RunRecord:
        """Close a run record with its outcome; `error` is kept as one line."""
        final = RunStatus(status)
        if final is RunStatus.RUNNING:
            raise ValueError(
                "finish_run needs a final status: succeeded, partial, failed or interrupted"
            )
        with self.engine.begin() as conn:
            result = conn.execute(
                runs_table.update()
                .where(runs_table.c.run_id == run_id)
                .values(
                    status=final.value,
                    finished_at=self._when(finished_at),
                    counts_json=_dumps(counts),
                    requests_json=_dumps(requests),
                    error=_one_line(error),
                    report_dir=report_dir,
                )
            )
            if result.rowcount != 1:
                raise ValueError(f"run id {run_id} is not recorded: call start_run first")
        return self._require_run(run_id)

    def get_run(self, run_id: str) -> RunRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                runs_table.select().where(runs_table.c.run_id == run_id)
            ).one_or_none()
        return None if row is None else _run_record(row)

    def _require_run(self, run_id: str) -> RunRecord:
        record = self.get_run(run_id)
        if record is None:  # pragma: no cover - only if someone deletes it underneath us
            raise ValueError(f"run id {run_id} vanished from the state database")
        return record

    def list_runs(self, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The most recent runs first, of one job or of all."""
        query = runs_table.select().order_by(
            runs_table.c.started_at.desc(), runs_table.c.run_id.desc()
        )
        if job is not None:
            query = query.where(runs_table.c.job == job)
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit)).all()
        return [_run_record(row) for row in rows]

    # Locks --------------------------------------------------------------------------

    def acquire_lock(
        self, job: str, owner: str, ttl_seconds: float, now: datetime | None = None
    ) -> bool:
        """Take the lease on `job` for `ttl_seconds`: free, expired, or already ours.

        One atomic step on both backends, so of any number of concurrent callers at
        most one wins.
        """
        if ttl_seconds <= 0:
            raise ValueError(f"lease ttl must be positive, got {ttl_seconds}")
        at = self._when(now)
        row = {
            "job": job,
            "owner": owner,
            "acquired_at": at,
            "expires_at": at + timedelta(seconds=ttl_seconds),
        }
        takeable = sa.or_(locks_table.c.expires_at <= at, locks_table.c.owner == owner)
        if self._upsert is not None:
            insert = self._upsert(locks_table).values(**row)
            statement = insert.on_conflict_do_update(
                index_elements=[locks_table.c.job],
                set_={
                    "owner": insert.excluded.owner,
                    "acquired_at": insert.excluded.acquired_at,
                    "expires_at": insert.excluded.expires_at,
                },
                where=takeable,
            ).returning(locks_table.c.owner)
            with self.engine.begin() as conn:
                return conn.execute(statement).first() is not None
        return self._acquire_portable(row, takeable)

    def _acquire_portable(self, row: dict[str, Any], takeable: sa.ColumnElement[bool]) -> bool:
        # Insert wins a free lock (the primary key lets one insert through); otherwise a
        # conditional update takes over an expired one. Each UPDATE re-checks its WHERE
        # on the row it locks, so two takers cannot both match.
        try:
            with self.engine.begin() as conn:
                conn.execute(locks_table.insert().values(**row))
            return True
        except sa.exc.IntegrityError:
            pass
        with self.engine.begin() as conn:
            result = conn.execute(
                locks_table.update()
                .where(locks_table.c.job == row["job"], takeable)
                .values(
                    owner=row["owner"],
                    acquired_at=row["acquired_at"],
                    expires_at=row["expires_at"],
                )
            )
            return result.rowcount == 1

    def renew_lock(
        self, job: str, owner: str, ttl_seconds: float, now: datetime | None = None
    ) -> bool:
        """Push our lease's expiry to `now + ttl`; False if it is no longer ours."""
        if ttl_seconds <= 0:
            raise ValueError(f"lease ttl must be positive, got {ttl_seconds}")
        at = self._when(now)
        with self.engine.begin() as conn:
            result = conn.execute(
                locks_table.update()
                .where(locks_table.c.job == job, locks_table.c.owner == owner)
                .values(expires_at=at + timedelta(seconds=ttl_seconds))
            )
            return result.rowcount == 1

    def expire_lock(self, job: str, owner: str, at: datetime) -> bool:
        """End `owner`'s lease on `job` at `at` (its holder is known dead), so the next
        taker gets it at once; False if `owner` no longer holds it."""
        with self.engine.begin() as conn:
            result = conn.execute(
                locks_table.update()
                .where(locks_table.c.job == job, locks_table.c.owner == owner)
                .values(expires_at=as_utc(at, "at"))
            )
            return result.rowcount == 1

    def release_lock(self, job: str, owner: str) -> bool:
        """Give the lease back; False if it was not ours (taken over, or never held)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                locks_table.delete().where(locks_table.c.job == job, locks_table.c.owner == owner)
            )
            return result.rowcount == 1

    def check_writable(self) -> None:
        """Write a lock row in a transaction that is rolled back: SQLAlchemy's error if the
        database refuses writes (read-only file, a user without INSERT)."""
        at = self.now()
        with self.engine.connect() as conn, conn.begin() as transaction:
            conn.execute(
                locks_table.insert().values(
                    job="stripe-reconcile check", owner="check", acquired_at=at, expires_at=at
                )
            )
            transaction.rollback()

    def lock_holder(self, job: str) -> LockRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(locks_table.select().where(locks_table.c.job == job)).one_or_none()
        if row is None:
            return None
        return LockRecord(row.job, row.owner, row.acquired_at, row.expires_at)

    @contextmanager
    def lease(
        self,
        job: str,
        owner: str,
        ttl_seconds: float,
        *,
        renew_every: float | None = None,
        acquired: bool = False,
    ) -> Iterator[Lease]:
        """Hold the lease on `job` for the block, renewed in the background, released after.

        Raises LockHeldError, naming the holder and when its lease expires, if another
        owner holds an unexpired lease. `acquired`: the caller's `acquire_lock` for `owner`
        has just succeeded, so the lease is held already and is not written again.
        """
        if not acquired and not self.acquire_lock(job, owner, ttl_seconds):
            # The holder may have released between the two statements: look, and try once more.
            holder = self.lock_holder(job)
            if holder is not None or not self.acquire_lock(job, owner, ttl_seconds):
                raise LockHeldError(lock_held_message(job, holder))
        held = Lease(self, job, owner, ttl_seconds, renew_every or ttl_seconds / 3)
        held.start()
        try:
            yield held
        finally:
            held.stop()
            try:
                self.release_lock(job, owner)
            except sa.exc.SQLAlchemyError as exc:
                # Never hide the block's own outcome; the lease expires by itself.
                log.warning("lease release failed", lease_job=job, error=type(exc).__name__)


def lock_held_message(job: str, holder: LockRecord | None) -> str:
    """The one line of exit code 5: who holds `job`'s lease, and when it expires."""
    if holder is None:
        return f"another {job} run holds the lock; wait for it and try again"
    return (
        f"another {job} run ({holder.owner}, started {_time_text(holder.acquired_at)}) holds "
        f"the lock; wait for it or, if it died, the lease expires at "
        f"{_time_text(holder.expires_at)}"
    )


class Lease:
    """A held lease, renewed every `renew_every` seconds by a daemon thread.

    If a renewal finds the lease taken over (we stalled past its expiry), `lost` turns
    true and `check()` raises, so a long job can stop before it writes anything more.
    """

    def __init__(
        self, store: StateStore, job: str, owner: str, ttl_seconds: float, renew_every: float
    ) -> None:
        self.job = job
        self.owner = owner
        self.ttl_seconds = ttl_seconds
        self.renew_every = renew_every
        self.renewals = 0
        self._store = store
        self._stopping = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{job}", daemon=True)

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def check(self) -> None:
        if self.lost:
            raise LockHeldError(
                f"the {self.job} lease was taken over by another run after it expired; "
                "stop this run and check the state database's runs"
            )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _renew_loop(self) -> None:
        while not self._stopping.wait(self.renew_every):
            try:
                renewed = self._store.renew_lock(self.job, self.owner, self.ttl_seconds)
            except sa.exc.SQLAlchemyError as exc:
                # A blip in the state DB: keep trying; the lease still runs for its ttl.
                log.warning("lease renewal failed", lease_job=self.job, error=type(exc).__name__)
                continue
            if not renewed:
                self._lost.set()
                log.error("lease lost", lease_job=self.job)
                return
            self.renewals += 1
