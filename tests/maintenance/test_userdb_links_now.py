"""The user DB reads and writes a delete relies on, on SQLite and PostgreSQL, for each kind
of soft-delete column: who links to a customer now, and a link cleared only while its user
is still soft-deleted and still holds that customer (one UPDATE that checks both)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from reconcile.settings import UserDBSettings
from reconcile.userdb import LinkedUser, UserDB

# (column type, a value meaning deleted, a value meaning not deleted)
DELETED_COLUMNS: dict[str, tuple[sa.types.TypeEngine[Any], Any, Any]] = {
    "timestamp": (sa.DateTime(timezone=True), datetime(2026, 1, 1, tzinfo=UTC), None),
    "boolean": (sa.Boolean(), True, False),
    "integer": (sa.Integer(), 1, 0),
    "text": (sa.String(10), "yes", "no"),
    "text-zero": (sa.String(10), "2026-01-01", "0"),
}


def _users_db(url: str, kind: str) -> UserDB:
    column_type, deleted, alive = DELETED_COLUMNS[kind]
    table = sa.Table(
        "members",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(320)),
        sa.Column("stripe_customer_id", sa.String(64)),
        sa.Column("gone", column_type),
    )
    engine = sa.create_engine(url)
    try:
        table.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                table.insert(),
                [
                    {"id": 1, "email": None, "stripe_customer_id": "cus_x", "gone": deleted},
                    {"id": 2, "email": None, "stripe_customer_id": "cus_x", "gone": alive},
                    # Stored with stray spaces: the snapshot trims them, so does the check.
                    {"id": 3, "email": None, "stripe_customer_id": " cus_x ", "gone": deleted},
                    {"id": 4, "email": None, "stripe_customer_id": "cus_y", "gone": deleted},
                ],
            )
    finally:
        engine.dispose()
    settings = UserDBSettings(
        url=url, table="members", name_column=None, deleted_column="gone", metadata={}
    )
    return UserDB(settings)


@pytest.mark.parametrize("kind", list(DELETED_COLUMNS))
def test_users_linked_to_reads_who_links_to_a_customer_now(database_url: str, kind: str) -> None:
    userdb = _users_db(database_url, kind)
    try:
        assert userdb.users_linked_to("cus_x") == [
            LinkedUser("1", deleted=True),
            LinkedUser("2", deleted=False),
            LinkedUser("3", deleted=True),
        ]
        assert userdb.users_linked_to("cus_none") == []
        # What the snapshot says of the same rows: the check and the snapshot agree.
        snapshot = userdb.read_users().set_index("user_id")
        assert list(snapshot["deleted"]) == [True, False, True, True]
    finally:
        userdb.close()


@pytest.mark.parametrize("kind", list(DELETED_COLUMNS))
def test_clear_customer_clears_only_a_soft_deleted_user_still_holding_the_id(
    database_url: str, kind: str
) -> None:
    userdb = _users_db(database_url, kind)
    try:
        assert userdb.clear_customer("2", "cus_x") is False  # not soft-deleted
        assert userdb.clear_customer("1", "cus_y") is False  # holds another customer
        assert userdb.clear_customer("1", "cus_x") is True
        assert userdb.clear_customer("1", "cus_x") is False  # already cleared
        assert userdb.clear_customer("3", "cus_x") is True  # trimmed, as the snapshot reads it
        assert userdb.users_linked_to("cus_x") == [LinkedUser("2", deleted=False)]
    finally:
        userdb.close()


def test_without_a_deleted_column_nobody_is_soft_deleted(database_url: str) -> None:
    userdb = _users_db(database_url, "boolean")
    userdb.close()
    settings = userdb.settings.model_copy(update={"deleted_column": None})
    userdb = UserDB(settings)
    try:
        assert [user.deleted for user in userdb.users_linked_to("cus_x")] == [False] * 3
        assert userdb.clear_customer("1", "cus_x") is False
    finally:
        userdb.close()


def test_an_untyped_sqlite_column_is_judged_as_the_snapshot_judges_it(sqlite_url: str) -> None:
    # SQLite lets a column without a type hold numbers and text alike.
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "create table members (id integer primary key, email text, "
                "stripe_customer_id text, gone)"
            )
            conn.exec_driver_sql(
                "insert into members values (1, null, 'cus_x', 1), (2, null, 'cus_x', 0), "
                "(3, null, 'cus_x', '2026-01-01'), (4, null, 'cus_x', null), "
                "(5, null, 'cus_x', 0.0), (6, null, 'cus_x', 'No'), (7, null, 'cus_x', '0')"
            )
    finally:
        engine.dispose()
    settings = UserDBSettings(
        url=sqlite_url, table="members", name_column=None, deleted_column="gone", metadata={}
    )
    userdb = UserDB(settings)
    try:
        expected = [True, False, True, False, False, False, False]
        assert [user.deleted for user in userdb.users_linked_to("cus_x")] == expected
        assert list(userdb.read_users()["deleted"]) == expected
        cleared = [userdb.clear_customer(str(user_id), "cus_x") for user_id in range(1, 8)]
        assert cleared == expected
    finally:
        userdb.close()
