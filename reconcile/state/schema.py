"""The state database's schema version, and the migrations that bring an older one up.

`stripe_reconcile_schema_version` holds one row: the version the database is at. Opening
the state database (`ensure_schema`, from the StateStore and every module that takes its
engine) brings it to `latest_version()`:

- a fresh database gets every table of `reconcile.state.tables` at the latest shape;
- a database of stripe-reconcile 0.1.0, which had no version, is checked (every table it
  holds has the columns 0.1.0 gave it), stamped version 1, then migrated;
- an older version runs the migrations after it, in order; the whole upgrade and the new
  version commit together, so a failed one leaves the database as it was;
- a newer version than this code knows is refused: older code must never write to it.

A database already at the latest version is only read, so a read-only one still opens.

Several runs may open an old or fresh database at once (`serve` starts jobs that are due
together in threads, pods start together). Upgraders queue: on PostgreSQL on a
transaction-scoped advisory lock (its DDL is transactional), on SQLite on the file's write
lock (`BEGIN IMMEDIATE`), and each one looks at the version again once it holds the lock,
so the second finds the work done. Elsewhere a creator that lost a race looks again.
"""

from __future__ import annotations

import threading
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from reconcile.errors import ConfigError
from reconcile.state.tables import (
    listing_profiles_table,
    listings_table,
    metadata,
    runs_table,
    schema_version_table,
)

__all__ = [
    "MIGRATIONS",
    "V1_COLUMNS",
    "Migration",
    "ensure_schema",
    "latest_version",
    "stored_version",
]

# One lock id for the whole state schema: upgrades are rare and quick.
_ADVISORY_LOCK_ID = zlib.crc32(b"stripe_reconcile schema") & 0x7FFFFFFF
_ATTEMPTS = 5


@dataclass(frozen=True)
class Migration:
    """Brings a database at `version - 1` to `version`, on the upgrade's connection.

    A migration must leave alone a table the database lacks: 0.1.0 created some tables
    only on first use, and the tables still missing after the migrations are created at
    the latest shape.
    """

    version: int
    description: str
    upgrade: Callable[[Connection], None]


def _index_run_listings_by_job(conn: Connection) -> None:
    # Every fresh listing looks up its job's earlier listings, in a table that gains a row
    # per listing run.
    if not sa.inspect(conn).has_table(listings_table.name):
        return
    for index in listings_table.indexes:
        if index.name == f"{listings_table.name}_job":
            index.create(conn, checkfirst=True)


def _resumed_from_on_runs(conn: Connection) -> None:
    # A listing's rows are deleted once its run's report is in place, so which run a run
    # resumed is kept on the run's own row; runs that resumed before this version keep it.
    inspector = sa.inspect(conn)
    if not inspector.has_table(runs_table.name):
        return
    if "resumed_from" not in {c["name"] for c in inspector.get_columns(runs_table.name)}:
        column = runs_table.c.resumed_from
        type_sql = column.type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE {runs_table.name} ADD COLUMN {column.name} {type_sql}"))
    if inspector.has_table(listings_table.name):
        resumed = (
            sa.select(listings_table.c.resumed_from)
            .where(listings_table.c.run_id == runs_table.c.run_id)
            .scalar_subquery()
        )
        conn.execute(runs_table.update().values(resumed_from=resumed))


def _listing_profiles(conn: Connection) -> None:
    # A new table: version 3's code would not know to keep it up to date.
    listing_profiles_table.create(conn, checkfirst=True)


# In version order; version 1 is the schema of stripe-reconcile 0.1.0 (V1_COLUMNS).
MIGRATIONS: list[Migration] = [
    Migration(2, "index stripe_reconcile_run_listings by job", _index_run_listings_by_job),
    Migration(3, "stripe_reconcile_runs.resumed_from", _resumed_from_on_runs),
    Migration(4, "stripe_reconcile_listing_profiles", _listing_profiles),
]

# The tables and columns 0.1.0 created: what an unversioned database must match to be
# stamped version 1. Frozen: later versions change tables through migrations.
V1_COLUMNS: dict[str, frozenset[str]] = {
    "stripe_reconcile_runs": frozenset(
        {
            "run_id",
            "job",
            "status",
            "started_at",
            "finished_at",
            "mode",
            "counts_json",
            "requests_json",
            "error",
            "report_dir",
        }
    ),
    "stripe_reconcile_locks": frozenset({"job", "owner", "acquired_at", "expires_at"}),
    "stripe_reconcile_audit": frozenset(
        {
            "id",
            "time",
            "run_id",
            "job",
            "action",
            "customer_id",
            "user_id",
            "before",
            "after",
            "idempotency_key",
            "stripe_request_id",
            "outcome",
            "error",
        }
    ),
    "stripe_reconcile_run_stats": frozenset(
        {"run_id", "rate_limited", "retries", "errors", "duration_seconds"}
    ),
    "stripe_reconcile_run_reads": frozenset(
        {"run_id", "job", "mode", "recorded_at", "reads", "customers"}
    ),
    "stripe_reconcile_reminders": frozenset(
        {
            "mode",
            "payment_method_id",
            "exp_year",
            "exp_month",
            "customer_id",
            "first_sent_at",
            "last_sent_at",
            "times_sent",
            "last_run_id",
        }
    ),
    "stripe_reconcile_run_listings": frozenset(
        {"run_id", "job", "listing_id", "created_lt", "work_dir", "resumed_from"}
    ),
    "stripe_reconcile_checkpoints": frozenset(
        {
            "listing_id",
            "window",
            "created_gte",
            "created_lt",
            "last_id",
            "pages",
            "rows",
            "done",
            "updated_at",
        }
    ),
}

# Engines whose database this process has seen at the latest version: opening the state
# DB again (each module that uses it does) then costs nothing.
_ready: weakref.WeakSet[Engine] = weakref.WeakSet()
_ready_lock = threading.Lock()


def latest_version() -> int:
    """The version this code creates and upgrades to."""
    return max([1, *(m.version for m in MIGRATIONS)])


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def stored_version(conn: Connection) -> int | None:
    """The version row's value; None for a database without one (fresh, or 0.1.0's)."""
    if not sa.inspect(conn).has_table(schema_version_table.name):
        return None
    found = conn.execute(sa.select(schema_version_table.c.version)).scalar()
    return None if found is None else int(found)


def _refuse_newer(engine: Engine, found: int) -> ConfigError:
    return ConfigError(
        f"[state] url {_safe_url(engine)}: the state database is at schema version {found}, "
        f"newer than this stripe-reconcile knows ({latest_version()}): a newer "
        "stripe-reconcile upgraded it; upgrade stripe-reconcile here too (never downgrade)"
    )


def ensure_schema(engine: Engine) -> None:
    """Bring the state database at `engine` to the latest version (see the module doc).

    Raises ConfigError for a database of a newer version, or one whose tables were not
    made by stripe-reconcile; SQLAlchemy's errors when it cannot be read or written.
    """
    with _ready_lock:
        if engine in _ready:
            return
    with engine.connect() as conn:
        found = stored_version(conn)
    if found is not None and found > latest_version():
        raise _refuse_newer(engine, found)
    if found != latest_version():
        for attempt in range(_ATTEMPTS):
            try:
                _upgrade(engine)
                break
            except (
                sa.exc.OperationalError,
                sa.exc.ProgrammingError,
                sa.exc.IntegrityError,
            ) as exc:
                if attempt == _ATTEMPTS - 1 or not _lost_creation_race(exc):
                    raise
    with _ready_lock:
        _ready.add(engine)


def _lost_creation_race(exc: sa.exc.DBAPIError) -> bool:
    # Only without the lock (another backend, or a 0.1.0 process creating its tables
    # meanwhile): SQLite "table X already exists", PostgreSQL DuplicateTable or the unique
    # index of pg_type when two CREATE TABLEs race, a second version row. And SQLite's
    # "disk I/O error" for a connection that opened the new file while another run of the
    # process was creating it (`serve` starting two jobs on a fresh database); looking
    # again finds the file whole.
    text = str(exc.orig).lower()
    return (
        "already exists" in text
        or "disk i/o error" in text
        or "pg_type_typname_nsp_index" in text
        or schema_version_table.name in text
    )


def _upgrade(engine: Engine) -> None:
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # The write lock now, not at the first write: the look below is then the truth.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
        found = stored_version(conn)
        latest = latest_version()
        if found is None:
            found = _first_version(conn, engine)
        if found > latest:
            raise _refuse_newer(engine, found)
        started = found
        for migration in sorted(MIGRATIONS, key=lambda m: m.version):
            if found < migration.version <= latest:
                _run(migration, conn, engine, started)
                found = migration.version
        # Tables a 0.1.0 database never needed yet, or a fresh database's.
        metadata.create_all(conn, checkfirst=True)
        _write_version(conn, latest)
        conn.commit()


def _run(migration: Migration, conn: Connection, engine: Engine, started: int) -> None:
    try:
        migration.upgrade(conn)
    except Exception as exc:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        cause = lines[0] if lines else type(exc).__name__
        raise ConfigError(
            f"[state] url {_safe_url(engine)}: upgrading the state database to schema version "
            f"{migration.version} ({migration.description}) failed ({cause}); it is unchanged, "
            f"at version {started}: check that this user may create and alter tables, then "
            "run again"
        ) from exc


def _first_version(conn: Connection, engine: Engine) -> int:
    """The version of a database without a version row: latest for a fresh one (made
    here), 1 for one 0.1.0 made (checked first)."""
    inspector = sa.inspect(conn)
    present = sorted(set(inspector.get_table_names()) & V1_COLUMNS.keys())
    if not present:
        metadata.create_all(conn, checkfirst=True)
        return latest_version()
    for name in present:
        columns = {column["name"] for column in inspector.get_columns(name)}
        missing = sorted(V1_COLUMNS[name] - columns)
        if missing:
            raise ConfigError(
                f"[state] url {_safe_url(engine)}: table {name} has no column "
                f"{', '.join(missing)}, so stripe-reconcile did not make it: point [state] url "
                "at a database of its own"
            )
    return 1


def _write_version(conn: Connection, version: int) -> None:
    values = {"version": version, "updated_at": datetime.now(UTC)}
    updated = conn.execute(
        schema_version_table.update().where(schema_version_table.c.id == 1).values(**values)
    )
    if updated.rowcount == 0:
        conn.execute(schema_version_table.insert().values(id=1, **values))
