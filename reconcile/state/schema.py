"""Creating the project's own tables safely when several runs open a fresh state DB at once.

`serve` starts jobs that are due together in threads, and pods start together: each one
creates the tables it needs, and `create_all(checkfirst=True)` is a look then a create,
so two creators can both see no table and one of them fails. On PostgreSQL the creators
queue on a transaction-scoped advisory lock (its DDL is transactional, so the second one
then sees the first one's tables); on SQLite, whose DDL takes the file's write lock, a
creator that lost the race looks again and finds the tables made.
"""

from __future__ import annotations

import zlib

import sqlalchemy as sa
from sqlalchemy.engine import Engine

__all__ = ["create_tables"]

# One lock id for every table of the project: creation is rare and quick.
_ADVISORY_LOCK_ID = zlib.crc32(b"stripe_reconcile schema") & 0x7FFFFFFF
_ATTEMPTS = 5


def _already_exists(exc: sa.exc.DBAPIError) -> bool:
    # SQLite: "table X already exists" / "index X already exists"; PostgreSQL (without the
    # lock, e.g. a creator of another version): DuplicateTable, or the unique index of
    # pg_type when two CREATE TABLEs race.
    text = str(exc.orig).lower()
    return "already exists" in text or "pg_type_typname_nsp_index" in text


def create_tables(metadata: sa.MetaData, engine: Engine) -> None:
    """Create `metadata`'s missing tables; a concurrent creator's tables count as made."""
    for attempt in range(_ATTEMPTS):
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK_ID}
                    )
                metadata.create_all(conn, checkfirst=True)
            return
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError) as exc:
            if attempt == _ATTEMPTS - 1 or not _already_exists(exc):
                raise
