from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from reconcile.errors import UserDBError
from reconcile.settings import UserDBSettings
from reconcile.userdb import UserDB, safe_url


def make_users_table(url: str, rows: list[dict[str, object]], *, extra: bool = True) -> None:
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    columns = [
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(200)),
        sa.Column("name", sa.String(200)),
        sa.Column("plan", sa.String(50)),
        sa.Column("seats", sa.Integer),
        sa.Column("stripe_customer_id", sa.String(40)),
    ]
    if extra:
        columns.append(sa.Column("deleted_at", sa.DateTime))
    table = sa.Table("users", meta, *columns)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    engine.dispose()


ROWS: list[dict[str, object]] = [
    {
        "id": 1,
        "email": "a@example.com",
        "name": "Ann",
        "plan": "pro",
        "seats": 3,
        "stripe_customer_id": "cus_A",
        "deleted_at": None,
    },
    {
        "id": 2,
        "email": " B@Example.com ",
        "name": None,
        "plan": None,
        "seats": None,
        "stripe_customer_id": "",
        "deleted_at": None,
    },
    {
        "id": 10,
        "email": None,
        "name": "Zoë",
        "plan": "free",
        "seats": 1,
        "stripe_customer_id": None,
        "deleted_at": pd.Timestamp("2026-01-02 03:04:05").to_pydatetime(),
    },
]


def test_reads_the_users_snapshot_identically_on_both_engines(database_url: str) -> None:
    make_users_table(database_url, ROWS)
    settings = UserDBSettings(
        url=database_url, metadata={"plan": "plan", "seats": "seats"}, chunk_size=100
    )
    users = UserDB(settings).read_users()
    assert list(users.columns) == [
        "user_id",
        "email",
        "name",
        "customer_id",
        "deleted",
        "meta.plan",
        "meta.seats",
    ]
    assert users["user_id"].tolist() == ["1", "2", "10"]
    assert users["customer_id"].isna().tolist() == [False, True, True]
    assert users["customer_id"].iloc[0] == "cus_A"
    assert users["deleted"].tolist() == [False, False, True]
    assert users["meta.seats"].iloc[0] == "3"  # an integer column stays "3", never "3.0"
    assert users["meta.seats"].isna().iloc[1]
    assert users["name"].iloc[2] == "Zoë"


def test_reads_in_chunks_across_many_rows(database_url: str) -> None:
    rows = [
        {
            "id": i,
            "email": f"u{i}@example.com",
            "name": None,
            "plan": "pro",
            "seats": i,
            "stripe_customer_id": f"cus_{i}",
            "deleted_at": None,
        }
        for i in range(1, 1001)
    ]
    make_users_table(database_url, rows)
    users = UserDB(UserDBSettings(url=database_url, chunk_size=128)).read_users()
    assert len(users) == 1000
    assert users["user_id"].is_unique


def test_inspect_reports_columns_and_rows(database_url: str) -> None:
    make_users_table(database_url, ROWS)
    info = UserDB(UserDBSettings(url=database_url)).inspect()
    assert info.row_count == 3
    assert "stripe_customer_id" in info.columns


def test_missing_table_is_named(database_url: str) -> None:
    make_users_table(database_url, ROWS)
    db = UserDB(UserDBSettings(url=database_url, table="members"))
    with pytest.raises(UserDBError, match=r"\[userdb\] table 'members' not found") as raised:
        db.read_users()
    assert raised.value.exit_code == 4


def test_an_explicitly_set_missing_column_is_named_with_its_table_and_fix(
    database_url: str,
) -> None:
    make_users_table(database_url, ROWS, extra=False)
    db = UserDB(UserDBSettings(url=database_url, deleted_column="removed_at"))
    with pytest.raises(
        UserDBError,
        match=r"column 'removed_at' \(\[userdb\] deleted_column\) not found in table 'users'; "
        r"its columns are: .*: set \[userdb\] deleted_column to one of them, or to \"\"",
    ) as raised:
        db.read_users()
    assert raised.value.exit_code == 4
    db = UserDB(UserDBSettings(url=database_url, metadata={"tier": "tier"}))
    with pytest.raises(
        UserDBError,
        match=r"column 'tier' \(\[userdb.metadata\] tier\) not found in table 'users'.*"
        r"map \[userdb.metadata\] tier to one of them, or remove it",
    ):
        db.read_users()
    # A required column at its default name is never optional.
    db = UserDB(UserDBSettings(url=database_url, email_column="mail"))
    with pytest.raises(UserDBError, match=r"column 'mail' \(\[userdb\] email_column\)"):
        db.read_users()


def test_duplicate_ids_are_refused(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "create table users (id text, email text, name text, plan text, "
                "stripe_customer_id text, deleted_at text)"
            )
        )
        conn.execute(
            sa.text("insert into users (id, email) values ('7', 'x@e.com'), ('7', 'y@e.com')")
        )
    with pytest.raises(UserDBError, match=r"duplicate value\(s\) in 'id'.*'7'"):
        UserDB(UserDBSettings(url=database_url)).read_users()


def test_unreachable_database_is_one_line_without_password() -> None:
    url = "postgresql+psycopg://app:hunter2@127.0.0.1:1/users?connect_timeout=2"
    with pytest.raises(UserDBError) as raised:
        UserDB(UserDBSettings(url=url)).read_users()
    message = raised.value.message
    assert "hunter2" not in message
    assert "check [userdb] url" in message
    assert "\n" not in message
    assert safe_url(url).count("***") == 1


def test_never_creates_or_alters_tables(database_url: str) -> None:
    make_users_table(database_url, ROWS)
    engine = sa.create_engine(database_url)
    before = sa.inspect(engine).get_table_names()
    UserDB(UserDBSettings(url=database_url)).read_users()
    assert sa.inspect(engine).get_table_names() == before
