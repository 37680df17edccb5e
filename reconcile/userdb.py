"""The application's user database, read through its existing schema.

The table is reflected, never created or altered. Rows are read in chunks and
turned into the users snapshot (`USER_COLUMNS` of `reconcile.rules.snapshots`): every
value a string, so the comparison sees the same thing on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from reconcile.errors import UserDBError
from reconcile.logs import get_logger
from reconcile.rules.deletion import LinkedUser
from reconcile.settings import Settings, UserDBSettings

# pandas is imported where users are read: a run's first Stripe request does not wait for
# it (tests/startup).
if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FeatureOff",
    "LinkedUser",
    "TableInfo",
    "UserDB",
    "read_only_engine",
    "safe_url",
    "stringify",
]

log = get_logger(__name__)

# Values of a text (or untyped) deleted column that mean "not deleted", lowercased.
_NOT_DELETED_TEXT = ("", "0", "false", "f", "no", "n")


@dataclass(frozen=True)
class TableInfo:
    table: str
    columns: tuple[str, ...]
    row_count: int


@dataclass(frozen=True)
class FeatureOff:
    """An optional column left at its default name that the table does not have."""

    setting: str  # "[userdb] name_column", "[userdb.metadata] plan"
    column: str
    feature: str
    how_to_enable: str

    def describe(self, table: str) -> str:
        return (
            f"{self.feature} switched off: table {table!r} has no column {self.column!r} "
            f"({self.setting}); {self.how_to_enable}"
        )


def _optional_defaults() -> dict[str, str]:
    """Setting -> column of the optional columns that are on by default."""
    built_in = UserDBSettings()
    defaults = {
        "name_column": str(built_in.name_column),
        "deleted_column": str(built_in.deleted_column),
    }
    defaults.update({f"metadata.{key}": column for key, column in built_in.metadata.items()})
    return defaults


_OPTIONAL_DEFAULTS = _optional_defaults()


def _feature_off(setting: str, column: str) -> FeatureOff:
    if setting == "name_column":
        return FeatureOff(
            "[userdb] name_column",
            column,
            "name comparison (stale name findings, sync_name)",
            "to turn it on, set [userdb] name_column to the column holding names",
        )
    if setting == "deleted_column":
        return FeatureOff(
            "[userdb] deleted_column",
            column,
            "soft-delete checks (deleted_user_customer findings, gdpr-delete)",
            "to turn them on, set [userdb] deleted_column to the column marking deleted users",
        )
    key = setting.split(".", 1)[1]
    return FeatureOff(
        f"[userdb.metadata] {key}",
        column,
        f"metadata comparison of {key!r} (stale metadata findings, sync-metadata)",
        f'to turn it on, map it under [userdb.metadata] to its column ({key} = "COLUMN")',
    )


def _missing_column_fix(setting: str, label: str) -> str:
    if setting.startswith("metadata."):
        return f"map {label} to one of them, or remove it"
    if setting in ("name_column", "deleted_column"):
        return f'set {label} to one of them, or to "" to switch what it serves off'
    return f"set {label} to one of them"


def _sqlite_file(url: sa.URL) -> Path | None:
    """The file of a SQLite URL; None for an in-memory or URI-style database."""
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):
        return None
    return Path(database)


def read_only_engine(url: str) -> Engine:
    """An engine whose connections cannot write: the user database is the application's.

    SQLite opens the file with `mode=ro` (never creating it); PostgreSQL sessions start
    with `default_transaction_read_only`. Other engines are opened as given.
    """
    parsed = sa.make_url(url)
    path = _sqlite_file(parsed)
    if path is not None and parsed.get_driver_name() == "pysqlite":
        uri = f"file:{quote(str(path.absolute()))}?mode=ro"
        return sa.create_engine(
            parsed.set(database=None, query={}),
            creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False),
            # The URL has no file left in it; without a pool class SQLAlchemy would take it
            # for an in-memory database and keep one connection per thread.
            poolclass=sa.pool.QueuePool,
            hide_parameters=True,
        )
    # The users' emails and names are bound parameters: a database error must not carry
    # them into a log or a traceback.
    engine = sa.create_engine(parsed, hide_parameters=True)
    if parsed.get_backend_name() == "postgresql":

        @sa.event.listens_for(engine, "connect")
        def _read_only(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("SET SESSION default_transaction_read_only = on")
            cursor.close()
            dbapi_connection.commit()

    return engine


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # a URL SQLAlchemy cannot parse is shown as its scheme only
        return url.split(":", 1)[0] + ":..."


def stringify(value: Any) -> str | None:
    """One canonical string per value, so metadata compares equal across engines."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:  # NaN
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, Decimal):
        normalized = value.normalize()
        return format(normalized, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _typed_id(column: sa.Column[Any], user_id: str) -> Any:
    # The snapshot holds ids as strings; PostgreSQL will not compare an integer to text.
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return user_id
    if python_type is int:
        try:
            return int(user_id)
        except ValueError:
            raise UserDBError(
                f"user id {user_id!r} is not an integer, but [userdb] id_column is"
            ) from None
    return user_id


def _is_deleted(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        return bool(value)
    if isinstance(value, str):
        return value.strip().lower() not in _NOT_DELETED_TEXT
    return True


def _soft_deleted(column: sa.Column[Any], dialect: str) -> sa.ColumnElement[bool]:
    """`_is_deleted` as SQL, so a write can require it in its own WHERE (compare-and-set)."""
    try:
        python_type: type | None = column.type.python_type
    except NotImplementedError:
        python_type = None
    if python_type is bool:
        return column == sa.true()
    if python_type in (int, float, Decimal):
        return sa.and_(column.is_not(None), column != 0)
    if python_type is str:
        return sa.and_(
            column.is_not(None), sa.func.lower(sa.func.trim(column)).not_in(_NOT_DELETED_TEXT)
        )
    if python_type is None or python_type is object:
        # Untyped (SQLite lets a column without a type hold anything): judged by its text,
        # and on SQLite a number 0 or 0.0 is not deleted either, as `_is_deleted` says.
        text = sa.func.lower(sa.func.trim(sa.cast(column, sa.String)))
        rule = sa.and_(column.is_not(None), text.not_in(_NOT_DELETED_TEXT))
        return sa.and_(rule, column != 0) if dialect == "sqlite" else rule
    return column.is_not(None)  # a timestamp, a date, ...: set means deleted


class UserDB:
    """Reads (and, for the link-users job, writes back customer ids to) the users table.

    Reads go through a read-only engine; the writes of link-users and gdpr-delete open a
    writable one of their own, on first use. `engine`, when given, serves both.
    """

    def __init__(self, settings: UserDBSettings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.features_off: tuple[FeatureOff, ...] = ()
        self._writer: Engine | None = engine
        try:
            self.engine = engine or read_only_engine(settings.url)
        except Exception as exc:
            raise UserDBError(
                f"[userdb] url {safe_url(settings.url)} is not a usable SQLAlchemy URL "
                f"({type(exc).__name__}: {exc}): use e.g. sqlite:///users.db or "
                "postgresql+psycopg://user@host/db"
            ) from None
        self._table: sa.Table | None = None

    def close(self) -> None:
        self.engine.dispose()
        if self._writer is not None and self._writer is not self.engine:
            self._writer.dispose()

    @property
    def write_engine(self) -> Engine:
        if self._writer is None:
            self._writer = sa.create_engine(self.settings.url, hide_parameters=True)
        return self._writer

    def effective_settings(self, settings: Settings) -> Settings:
        """`settings` with the optional columns the table lacks switched off (reflects it)."""
        self.table()
        if settings.userdb == self.settings:
            return settings
        return settings.model_copy(update={"userdb": self.settings})

    def _check_file_exists(self) -> None:
        try:
            path = _sqlite_file(sa.make_url(self.settings.url))
        except Exception:  # an unparsable URL is reported when the engine is made
            return
        if path is not None and not path.is_file():
            raise UserDBError(
                f"the user database file {path.absolute()} does not exist ([userdb] url "
                f"{safe_url(self.settings.url)}); it is never created: point [userdb] url "
                "at your users database in the configuration file (--config PATH or "
                "STRIPE_RECONCILE_CONFIG) or set STRIPE_RECONCILE_USERDB_URL"
            )

    @property
    def _wanted_columns(self) -> dict[str, str]:
        """Setting name -> column name, for every column the run needs."""
        s = self.settings
        wanted = {
            "id_column": s.id_column,
            "email_column": s.email_column,
            "customer_id_column": s.customer_id_column,
        }
        if s.name_column:
            wanted["name_column"] = s.name_column
        if s.deleted_column:
            wanted["deleted_column"] = s.deleted_column
        for key, column in s.metadata.items():
            wanted[f"metadata.{key}"] = column
        return wanted

    def used_columns(self) -> list[str]:
        return list(dict.fromkeys(self._wanted_columns.values()))

    def table(self) -> sa.Table:
        if self._table is not None:
            return self._table
        self._check_file_exists()
        schema, _, name = self.settings.table.rpartition(".")
        try:
            table = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=self.engine)
        except NoSuchTableError:
            raise UserDBError(
                f"[userdb] table {self.settings.table!r} not found in "
                f"{safe_url(self.settings.url)}: set [userdb] table to your users table"
            ) from None
        except SQLAlchemyError as exc:
            raise self._connection_error(exc) from None
        present = set(table.columns.keys())
        off: list[tuple[str, str]] = []
        for setting, column in self._wanted_columns.items():
            if column in present:
                continue
            if _OPTIONAL_DEFAULTS.get(setting) == column:
                off.append((setting, column))
                continue
            label = (
                f"[userdb.metadata] {setting.split('.', 1)[1]}"
                if setting.startswith("metadata.")
                else f"[userdb] {setting}"
            )
            raise UserDBError(
                f"column {column!r} ({label}) not found in table {self.settings.table!r}; "
                f"its columns are: {', '.join(sorted(present))}: "
                f"{_missing_column_fix(setting, label)}"
            )
        if off:
            self._switch_off(off)
        self._table = table
        return table

    def _switch_off(self, off: list[tuple[str, str]]) -> None:
        """Optional columns at their default names that the table lacks: their features
        are off, as if the settings had left them out."""
        update: dict[str, Any] = {}
        metadata = dict(self.settings.metadata)
        for setting, _column in off:
            if setting.startswith("metadata."):
                metadata.pop(setting.split(".", 1)[1], None)
            else:
                update[setting] = None
        if metadata != self.settings.metadata:
            update["metadata"] = metadata
        self.settings = self.settings.model_copy(update=update)
        self.features_off = tuple(_feature_off(setting, column) for setting, column in off)
        log.info(
            "optional columns absent: features off",
            table=self.settings.table,
            off="; ".join(f.describe(self.settings.table) for f in self.features_off),
        )

    def _connection_error(self, exc: Exception) -> UserDBError:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return UserDBError(
            f"cannot read the user database {safe_url(self.settings.url)}: {reason}; "
            "check [userdb] url and that the server is reachable"
        )

    def inspect(self) -> TableInfo:
        table = self.table()
        try:
            with self.engine.connect() as conn:
                count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        except SQLAlchemyError as exc:
            raise self._connection_error(exc) from None
        return TableInfo(self.settings.table, tuple(table.columns.keys()), int(count))

    def _iter_chunks(self) -> Iterator[Sequence[sa.Row[Any]]]:
        table = self.table()
        columns = [table.c[column] for column in self._wanted_columns.values()]
        query = sa.select(*columns).order_by(table.c[self.settings.id_column])
        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(
                    stream_results=True, yield_per=self.settings.chunk_size
                ).execute(query)
                yield from result.partitions(self.settings.chunk_size)
        except SQLAlchemyError as exc:
            raise self._connection_error(exc) from None

    def read_users(self) -> pd.DataFrame:
        """The users snapshot: user_id, email, name, customer_id, deleted, meta.<key>..."""
        import pandas as pd

        self.table()  # first: the optional columns the table lacks leave the wanted ones
        names = list(self._wanted_columns)
        # Rows as plain tuples: pandas probes each Row for attributes (an exception each).
        frames = [
            pd.DataFrame(list(map(tuple, chunk)), columns=names, dtype=object)
            for chunk in self._iter_chunks()
        ]
        raw = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame({name: pd.Series([], dtype=object) for name in names})
        )
        return self._to_snapshot(raw)

    def _to_snapshot(self, raw: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        def strings(column: str) -> pd.Series:
            values = raw[column]
            # Text columns (the usual case) are strings already; others are canonicalised.
            if len(raw) and pd.api.types.infer_dtype(values, skipna=True) != "string":
                values = values.map(stringify, na_action="ignore")
            series = pd.Series(values, dtype="string")
            return series.mask(series.str.strip() == "")

        user_ids = strings("id_column")
        self._check_ids(user_ids)
        snapshot = pd.DataFrame(
            {
                "user_id": user_ids,
                "email": strings("email_column"),
                "name": (
                    strings("name_column")
                    if "name_column" in raw
                    else pd.Series(pd.NA, index=raw.index, dtype="string")
                ),
                "customer_id": strings("customer_id_column").str.strip(),
                "deleted": (
                    raw["deleted_column"].map(_is_deleted).astype(bool)
                    if "deleted_column" in raw
                    else pd.Series(False, index=raw.index, dtype=bool)
                ),
            }
        )
        for key in self.settings.metadata:
            snapshot[f"meta.{key}"] = strings(f"metadata.{key}")
        return snapshot

    # -- writes (link-users, gdpr-delete): one short transaction each ---------------------

    def read_user(self, user_id: str) -> dict[str, Any] | None:
        """One user's row as it is now (`user_id`, `email`, `name`, `customer_id`,
        `deleted`, `meta.<key>`, NULLs as None), read as `read_users` reads every row; None
        when there is no such user. A write re-reads the row it depends on just before it
        is sent: the run's snapshot may be as old as its listing."""
        import pandas as pd

        table = self.table()
        wanted = self._wanted_columns
        id_column = table.c[self.settings.id_column]
        query = sa.select(*[table.c[column] for column in wanted.values()]).where(
            id_column == _typed_id(id_column, user_id)
        )
        try:
            with self.engine.connect() as conn:
                rows = [tuple(row) for row in conn.execute(query).all()]
        except SQLAlchemyError as exc:
            raise self._connection_error(exc) from None
        if not rows:
            return None
        snapshot = self._to_snapshot(pd.DataFrame(rows[:1], columns=list(wanted), dtype=object))
        record = snapshot.iloc[0].to_dict()
        return {str(name): (None if value is pd.NA else value) for name, value in record.items()}

    def link_customer(self, user_id: str, customer_id: str) -> bool:
        """Write `customer_id` to the user only where its column is still NULL or empty.

        Returns whether this call wrote it: False when the user is gone or someone linked
        it meanwhile (a link written by someone else is never overwritten).
        """
        column = self.table().c[self.settings.customer_id_column]
        return self._update_one(
            user_id, customer_id, sa.or_(column.is_(None), sa.func.trim(column) == "")
        )

    def clear_customer(self, user_id: str, customer_id: str) -> bool:
        """Empty the user's customer id only if it still holds `customer_id` and the user
        is still soft-deleted (gdpr-delete): one UPDATE whose WHERE checks both, so a user
        restored or relinked meanwhile keeps its link. Without `[userdb] deleted_column`
        no user is soft-deleted and nothing is cleared.

        Returns whether this call cleared it.
        """
        if not self.settings.deleted_column:
            return False
        table = self.table()
        column = table.c[self.settings.customer_id_column]
        deleted = _soft_deleted(table.c[self.settings.deleted_column], self.engine.dialect.name)
        return self._update_one(
            user_id, None, sa.and_(sa.func.trim(column) == customer_id, deleted)
        )

    # -- reads of the moment (the deletes' last checks) ---------------------------------

    def users_linked_to(self, customer_id: str) -> list[LinkedUser]:
        """Every user whose customer id column holds `customer_id` now, read in one query
        (not from the run's snapshot): what a delete re-checks just before it is sent.

        The column is compared trimmed, as the snapshot reads it; that comparison cannot
        use an index, so each call scans the table: deletes are few.
        """
        table = self.table()
        id_column = table.c[self.settings.id_column]
        column = table.c[self.settings.customer_id_column]
        deleted_name = self.settings.deleted_column
        selected: list[sa.ColumnElement[Any]] = [id_column]
        if deleted_name:
            selected.append(table.c[deleted_name])
        query = sa.select(*selected).where(sa.func.trim(column) == customer_id).order_by(id_column)
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
        except SQLAlchemyError as exc:
            raise self._connection_error(exc) from None
        return [
            LinkedUser(
                user_id=str(stringify(row[0])),
                deleted=_is_deleted(row[1]) if deleted_name else False,
            )
            for row in rows
        ]

    def _update_one(
        self, user_id: str, value: str | None, condition: sa.ColumnElement[bool]
    ) -> bool:
        table = self.table()
        id_column = table.c[self.settings.id_column]
        statement = (
            table.update()
            .where(id_column == _typed_id(id_column, user_id), condition)
            .values({self.settings.customer_id_column: value})
        )
        try:
            with self.write_engine.begin() as conn:
                written = conn.execute(statement).rowcount
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise UserDBError(
                f"cannot write [userdb] customer_id_column {self.settings.customer_id_column!r} "
                f"of user {user_id} in {safe_url(self.settings.url)}: {reason}; check that the "
                "database user may UPDATE the table"
            ) from None
        # read_users refuses duplicate ids, so at most one row matches.
        return written >= 1

    def _check_ids(self, user_ids: pd.Series) -> None:
        column = self.settings.id_column
        nulls = int(user_ids.isna().sum())
        if nulls:
            raise UserDBError(
                f"{nulls} row(s) of table {self.settings.table!r} have no {column!r} "
                f"([userdb] id_column): every user needs an id; fix the rows or the setting"
            )
        duplicated = user_ids[user_ids.duplicated()]
        if len(duplicated):
            raise UserDBError(
                f"{len(duplicated)} duplicate value(s) in {column!r} ([userdb] id_column) of "
                f"table {self.settings.table!r}, e.g. {duplicated.iloc[0]!r}: "
                "point id_column at a unique column"
            )
