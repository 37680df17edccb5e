"""The user database: read through a connection that cannot write, never created, and
optional columns that switch their feature off when absent at their default names."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog
from click.testing import CliRunner

from jobs.commands.cli import cli
from reconcile.errors import EXIT_USERDB, UserDBError
from reconcile.settings import Settings, UserDBSettings
from reconcile.userdb import UserDB
from tests.seeded import TEST_KEY, SeededWorld

USERS = sa.Table(
    "users",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("email", sa.String(200)),
    sa.Column("stripe_customer_id", sa.String(64)),
)


def _bare_users_table(url: str) -> None:
    """id, email and stripe_customer_id only: no name, deleted_at or plan."""
    engine = sa.create_engine(url)
    USERS.create(engine)
    with engine.begin() as conn:
        conn.execute(
            USERS.insert(),
            [
                {"id": 1, "email": "a@example.com", "stripe_customer_id": "cus_A"},
                {"id": 2, "email": "b@example.com", "stripe_customer_id": None},
            ],
        )
    engine.dispose()


def test_reads_cannot_write_while_link_users_can(database_url: str) -> None:
    _bare_users_table(database_url)
    db = UserDB(UserDBSettings(url=database_url))
    try:
        assert len(db.read_users()) == 2
        with (
            pytest.raises(sa.exc.DBAPIError, match=r"(?i)read-only|readonly"),
            db.engine.begin() as conn,
        ):
            conn.execute(USERS.update().values(email="changed@example.com"))
        # The write path of link-users has a writable engine of its own.
        assert db.link_customer("2", "cus_B") is True
        assert db.read_user("2") is not None
        assert db.read_users().set_index("user_id").loc["2", "customer_id"] == "cus_B"
        assert set(db.read_users()["email"]) == {"a@example.com", "b@example.com"}
    finally:
        db.close()


def test_a_missing_sqlite_file_is_named_and_never_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "users.db"
    (tmp_path / "nowhere").mkdir()
    db = UserDB(UserDBSettings(url=f"sqlite:///{path}"))
    with pytest.raises(UserDBError) as raised:
        db.read_users()
    assert raised.value.exit_code == EXIT_USERDB
    assert f"the user database file {path} does not exist" in raised.value.message
    assert not path.exists()


def test_absent_optional_columns_at_their_defaults_switch_their_features_off(
    database_url: str,
) -> None:
    _bare_users_table(database_url)
    db = UserDB(UserDBSettings(url=database_url))
    with structlog.testing.capture_logs() as logs:
        users = db.read_users()
    assert list(users.columns) == ["user_id", "email", "name", "customer_id", "deleted"]
    assert users["deleted"].tolist() == [False, False]
    assert db.used_columns() == ["id", "email", "stripe_customer_id"]
    assert [(off.setting, off.column) for off in db.features_off] == [
        ("[userdb] name_column", "name"),
        ("[userdb] deleted_column", "deleted_at"),
        ("[userdb.metadata] plan", "plan"),
    ]
    infos = [e for e in logs if e["event"] == "optional columns absent: features off"]
    assert len(infos) == 1
    assert infos[0]["log_level"] == "info"
    assert "set [userdb] name_column to the column holding names" in infos[0]["off"]

    effective = db.effective_settings(Settings(userdb=UserDBSettings(url=database_url)))
    assert effective.userdb.name_column is None
    assert effective.userdb.deleted_column is None
    assert effective.userdb.metadata == {}


def test_check_says_which_feature_is_off_and_how_to_turn_it_on(
    world: SeededWorld, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'bare.db'}"
    _bare_users_table(url)
    config = tmp_path / "config.toml"
    config.write_text(f'[userdb]\nurl = "{url}"\n[state]\nurl = "sqlite:///state.db"\n')
    result = CliRunner().invoke(
        cli,
        ["check", "--config", str(config)],
        env={"STRIPE_SECRET_KEY": TEST_KEY, "STRIPE_API_BASE": world.sandbox.url},
    )
    notes = [line for line in result.stdout.splitlines() if line.startswith("note  ")]
    assert notes == [
        "note  name comparison (stale name findings, sync_name) switched off: table 'users' has no "
        "column 'name' ([userdb] name_column); to turn it on, set [userdb] name_column to the "
        "column holding names",
        "note  soft-delete checks (deleted_user_customer findings, gdpr-delete) switched off: "
        "table 'users' has no column 'deleted_at' ([userdb] deleted_column); to turn them on, set "
        "[userdb] deleted_column to the column marking deleted users",
        "note  metadata comparison of 'plan' (stale metadata findings, sync-metadata) switched "
        "off: table 'users' has no column 'plan' ([userdb.metadata] plan); to turn it on, map it "
        'under [userdb.metadata] to its column (plan = "COLUMN")',
    ], result.stdout
    assert result.exit_code == 0, result.stdout


def test_a_run_over_a_table_without_optional_columns_completes(
    world: SeededWorld, tmp_path: Path
) -> None:
    users_db = Path(world.users_url.removeprefix("sqlite:///"))
    engine = sa.create_engine(world.users_url)
    with engine.begin() as conn:
        for column in ("name", "deleted_at", "plan"):
            conn.execute(sa.text(f"alter table users drop column {column}"))
    engine.dispose()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[userdb]\nurl = "sqlite:///{users_db}"\nscope = {{ env = "prod" }}\n'
        '[state]\nurl = "sqlite:///state.db"\n[reports]\nout = "out"\n'
    )
    result = CliRunner().invoke(
        cli,
        ["run", "reconcile", "--config", str(config)],
        env={"STRIPE_SECRET_KEY": TEST_KEY, "STRIPE_API_BASE": world.sandbox.url},
    )
    assert result.exit_code == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    findings = (run_dir / "findings.csv").read_text()
    assert "metadata.plan" not in findings
    assert ",name," not in findings
    assert "deleted_user_customer" not in findings


def test_an_explicit_column_is_required_even_in_a_run(world: SeededWorld, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[userdb]\nurl = "{world.users_url}"\nname_column = "full_name"\n'
        '[state]\nurl = "sqlite:///state.db"\n[reports]\nout = "out"\n'
    )
    result = CliRunner().invoke(
        cli,
        ["run", "reconcile", "--config", str(config)],
        env={"STRIPE_SECRET_KEY": TEST_KEY, "STRIPE_API_BASE": world.sandbox.url},
    )
    assert result.exit_code == EXIT_USERDB
    assert "column 'full_name' ([userdb] name_column) not found in table 'users'" in (result.stderr)
