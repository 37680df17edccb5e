"""The state database's schema version: created at the latest, 0.1.0's upgraded in place,
upgrades safe when runs open the database together, a newer database refused."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import Connection

from jobs.commands.cli import cli
from reconcile.errors import EXIT_CONFIG, ConfigError
from reconcile.rules.listing_plan import ListingProfile
from reconcile.state import schema
from reconcile.state.audit import AuditLog
from reconcile.state.checkpoints import CheckpointStore
from reconcile.state.history import resumed_from
from reconcile.state.schema import MIGRATIONS, V1_COLUMNS, Migration, latest_version
from reconcile.state.store import StateStore
from reconcile.state.tables import TABLE_PREFIX, metadata, schema_version_table
from tests.state.v1 import (
    RUN_OK,
    SQLITE_FIXTURE,
    assert_old_state_carries_on,
    assert_v1_rows_read_back,
    postgresql_v1_from_ddl,
    sqlite_v1,
    table_names,
    write_with_v1_code,
)

ROOT = Path(__file__).resolve().parents[2]
STATE_TABLES = {
    "stripe_reconcile_schema_version",
    "stripe_reconcile_runs",
    "stripe_reconcile_locks",
    "stripe_reconcile_audit",
    "stripe_reconcile_run_stats",
    "stripe_reconcile_run_reads",
    "stripe_reconcile_reminders",
    "stripe_reconcile_run_listings",
    "stripe_reconcile_checkpoints",
    "stripe_reconcile_listing_profiles",
}


def stored(url: str) -> int | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return schema.stored_version(conn)
    finally:
        engine.dispose()


def set_version(url: str, version: int) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(schema_version_table.update().values(version=version))
    finally:
        engine.dispose()


def shape(url: str) -> dict[str, Any]:
    """Tables, columns (name, nullable), primary keys and indexes, to compare schemas."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        found: dict[str, Any] = {}
        for name in sorted(inspector.get_table_names()):
            found[name] = {
                "columns": sorted((c["name"], c["nullable"]) for c in inspector.get_columns(name)),
                "primary_key": inspector.get_pk_constraint(name)["constrained_columns"],
                "indexes": sorted(
                    (str(i["name"]), tuple(i["column_names"]), bool(i["unique"]))
                    for i in inspector.get_indexes(name)
                ),
            }
        return found
    finally:
        engine.dispose()


@pytest.fixture
def v1_url(database_url: str, tmp_path: Path) -> str:
    """A state database as 0.1.0 left it, on SQLite (its own file) or PostgreSQL."""
    if database_url.startswith("sqlite"):
        return sqlite_v1(tmp_path)
    postgresql_v1_from_ddl(database_url, tmp_path)
    return database_url


@pytest.fixture
def opened() -> Iterator[list[StateStore]]:
    stores: list[StateStore] = []
    yield stores
    for store in stores:
        store.close()


def open_store(url: str, opened: list[StateStore]) -> StateStore:
    store = StateStore(url)
    opened.append(store)
    return store


# Fresh ----------------------------------------------------------------------------------


def test_every_state_table_is_on_one_metadata_with_one_prefix() -> None:
    assert set(metadata.tables) == STATE_TABLES
    assert all(name.startswith(TABLE_PREFIX) for name in metadata.tables)
    for index in (i for t in metadata.tables.values() for i in t.indexes):
        assert str(index.name).removeprefix("ix_").startswith(TABLE_PREFIX), index.name


def test_a_fresh_database_is_created_at_the_latest_version(
    database_url: str, opened: list[StateStore]
) -> None:
    open_store(database_url, opened)
    assert stored(database_url) == latest_version() == 4
    assert table_names(database_url) == STATE_TABLES


def test_migration_2_indexes_the_listings_by_job(
    database_url: str, opened: list[StateStore]
) -> None:
    open_store(database_url, opened)
    indexes = shape(database_url)["stripe_reconcile_run_listings"]["indexes"]
    assert ("stripe_reconcile_run_listings_job", ("job",), False) in indexes


def test_migration_3_keeps_which_run_a_run_resumed_on_the_run_row(
    v1_url: str, opened: list[StateStore]
) -> None:
    # A run that resumed before version 3 is known by its listing row alone.
    engine = sa.create_engine(v1_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO stripe_reconcile_run_listings"
            " (run_id, job, listing_id, created_lt, work_dir, resumed_from)"
            f" VALUES ('{RUN_OK}', 'reconcile', 'l-1', 1, '/w', 'run-before')"
        )
    engine.dispose()
    state = open_store(v1_url, opened)
    columns = dict(shape(v1_url)["stripe_reconcile_runs"]["columns"])
    assert columns["resumed_from"] is True
    assert resumed_from(state, RUN_OK) == "run-before"
    # The listing's rows may go now: the run's row still says it.
    CheckpointStore(state.engine).forget_listing("l-1")
    assert resumed_from(state, RUN_OK) == "run-before"


def test_a_read_only_database_at_the_latest_version_opens(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore(f"sqlite:///{path}").close()
    store = StateStore(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        assert store.list_runs() == []
    finally:
        store.close()


# 0.1.0's database, upgraded in place -------------------------------------------------------


def test_the_fixture_has_the_tables_and_columns_of_0_1_0() -> None:
    # V1_COLUMNS is what an unversioned database is checked against: it must be 0.1.0's.
    engine = sa.create_engine(f"sqlite:///file:{SQLITE_FIXTURE}?mode=ro&uri=true")
    try:
        inspector = sa.inspect(engine)
        found = {
            name: frozenset(c["name"] for c in inspector.get_columns(name))
            for name in inspector.get_table_names()
        }
    finally:
        engine.dispose()
    assert found == V1_COLUMNS


def test_a_0_1_0_database_is_upgraded_in_place_and_every_row_reads_back(
    v1_url: str, opened: list[StateStore]
) -> None:
    assert stored(v1_url) is None
    state = open_store(v1_url, opened)
    assert stored(v1_url) == latest_version()
    assert_v1_rows_read_back(state)
    assert_old_state_carries_on(state)


def test_an_upgraded_database_has_the_schema_of_a_fresh_one(
    v1_url: str, database_url: str, tmp_path: Path, opened: list[StateStore]
) -> None:
    open_store(v1_url, opened)
    if database_url.startswith("sqlite"):
        fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
        open_store(fresh, opened)
        assert shape(v1_url) == shape(fresh)
    else:
        # One PostgreSQL schema per test: compare with a fresh SQLite's table list only.
        fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
        open_store(fresh, opened)
        assert set(shape(v1_url)) == set(shape(fresh))
        assert {t: s["indexes"] for t, s in shape(v1_url).items()} == {
            t: s["indexes"] for t, s in shape(fresh).items()
        }


@pytest.mark.postgres
def test_a_database_written_by_0_1_0_on_postgresql_is_upgraded_in_place(
    postgres_url: str, opened: list[StateStore]
) -> None:
    write_with_v1_code(postgres_url)  # the old code itself, in a subprocess
    assert stored(postgres_url) is None
    state = open_store(postgres_url, opened)
    assert stored(postgres_url) == latest_version()
    assert_v1_rows_read_back(state)
    assert_old_state_carries_on(state)


def test_migration_4_adds_the_listing_shapes_to_a_version_3_database(
    database_url: str, opened: list[StateStore]
) -> None:
    # A database as version 3 left it: every table but the listing shapes, its rows kept.
    state = open_store(database_url, opened)
    state.close()
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE stripe_reconcile_listing_profiles")
        conn.execute(schema_version_table.update().values(version=3))
        conn.exec_driver_sql(
            "INSERT INTO stripe_reconcile_run_listings"
            " (run_id, job, listing_id, created_lt, work_dir, resumed_from)"
            " VALUES ('run-v3', 'reconcile', 'l-3', 7, '/w', NULL)"
        )
    engine.dispose()
    state = open_store(database_url, opened)
    assert stored(database_url) == 4
    assert table_names(database_url) == STATE_TABLES
    store = CheckpointStore(state.engine)
    listing = store.listing_of("run-v3")
    assert listing is not None
    assert listing.created_lt == 7
    profile = ListingProfile(created_lt=9, customers=250, marks=((1, 0), (5, 100), (8, 200)))
    store.save_profile("acct", "test", profile)
    assert store.profile("acct", "test") == profile
    # An older listing's shape never replaces a newer one's.
    store.save_profile("acct", "test", ListingProfile(created_lt=8, customers=1, marks=()))
    assert store.profile("acct", "test") == profile
    assert store.profile("acct", "live") is None


def test_a_0_1_0_database_without_the_tables_made_on_first_use_gets_them(
    tmp_path: Path, opened: list[StateStore]
) -> None:
    # 0.1.0 made the audit, reminder, listing and stats tables only when first needed.
    url = sqlite_v1(tmp_path)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for name in ("audit", "reminders", "run_listings", "checkpoints", "run_stats"):
            conn.exec_driver_sql(f"DROP TABLE stripe_reconcile_{name}")
    engine.dispose()
    state = open_store(url, opened)
    assert stored(url) == latest_version()
    assert table_names(url) == STATE_TABLES
    assert [r.run_id for r in state.list_runs()][-1] == RUN_OK
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    open_store(fresh, opened)
    assert shape(url) == shape(fresh)


def test_an_unversioned_table_that_0_1_0_did_not_make_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE stripe_reconcile_runs (run_id TEXT PRIMARY KEY)")
    engine.dispose()
    with pytest.raises(ConfigError, match=r"table stripe_reconcile_runs has no column") as info:
        StateStore(url)
    assert "\n" not in str(info.value)
    assert stored(url) is None  # nothing stamped, nothing created
    assert table_names(url) == {"stripe_reconcile_runs"}


# Migrations ---------------------------------------------------------------------------------


def _create_marker(conn: Connection) -> None:
    conn.exec_driver_sql("CREATE TABLE stripe_reconcile_test_marker (id INTEGER PRIMARY KEY)")


def test_migrations_are_numbered_from_2_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(2, len(MIGRATIONS) + 2))
    assert latest_version() == len(MIGRATIONS) + 1


def test_a_later_migration_runs_once_on_an_older_database(
    v1_url: str, monkeypatch: pytest.MonkeyPatch, opened: list[StateStore]
) -> None:
    calls: list[int] = []
    later = latest_version() + 1

    def marker(conn: Connection) -> None:
        calls.append(later)
        _create_marker(conn)

    monkeypatch.setattr(schema, "MIGRATIONS", [*MIGRATIONS, Migration(later, "a marker", marker)])
    open_store(v1_url, opened)
    open_store(v1_url, opened)  # at the marker's version now: nothing to run
    assert calls == [later]
    assert stored(v1_url) == later
    assert "stripe_reconcile_test_marker" in table_names(v1_url)
    assert_v1_rows_read_back(opened[-1])


def test_a_failed_migration_leaves_the_database_as_it_was(
    v1_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = shape(v1_url)

    def broken(conn: Connection) -> None:
        _create_marker(conn)
        raise RuntimeError("disk full")

    later = latest_version() + 1
    monkeypatch.setattr(schema, "MIGRATIONS", [*MIGRATIONS, Migration(later, "a marker", broken)])
    with pytest.raises(ConfigError) as info:
        StateStore(v1_url)
    message = str(info.value)
    assert (
        f"schema version {later} (a marker) failed (disk full); it is unchanged, at version 1"
        in message
    )
    assert "\n" not in message
    # The earlier migrations' index and column, the marker table and the version row all
    # rolled back together.
    assert shape(v1_url) == before
    assert stored(v1_url) is None


# Newer ----------------------------------------------------------------------------------------


def _with_password(url: str) -> str:
    return sa.make_url(url).set(password="s3cret-pw").render_as_string(hide_password=False)


def test_a_database_of_a_newer_version_is_refused_with_one_line(
    database_url: str, opened: list[StateStore]
) -> None:
    open_store(database_url, opened)
    set_version(database_url, latest_version() + 1)
    url = database_url if database_url.startswith("sqlite") else _with_password(database_url)
    for opener in (StateStore, lambda u: AuditLog(sa.create_engine(u))):
        with pytest.raises(ConfigError) as info:
            opener(url)
        message = str(info.value)
        assert "\n" not in message
        assert f"schema version {latest_version() + 1}, newer than" in message
        assert "upgrade stripe-reconcile" in message
        assert sa.make_url(url).render_as_string(hide_password=True) in message
        assert "s3cret-pw" not in message
        assert info.value.exit_code == EXIT_CONFIG
    assert stored(database_url) == latest_version() + 1  # untouched


def test_the_cli_refuses_a_newer_state_database_with_the_config_exit_code(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    StateStore(url).close()
    set_version(url, 99)
    config = tmp_path / "config.toml"
    config.write_text(f'[state]\nurl = "{url}"\n')
    result = CliRunner().invoke(cli, ["runs", "--config", str(config)], catch_exceptions=False)
    assert result.exit_code == EXIT_CONFIG
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "schema version 99" in lines[0]
    assert "upgrade stripe-reconcile" in lines[0]


# Together ---------------------------------------------------------------------------------------

_OPENERS = 6


def _together(action: Callable[[], None], count: int = _OPENERS) -> list[BaseException]:
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def opener() -> None:
        start.wait()
        try:
            action()
        except BaseException as exc:  # every failure is the finding
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


@pytest.mark.parametrize("start", ["fresh", "0.1.0"])
def test_runs_opening_the_database_together_upgrade_it_once(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    url = database_url
    if start == "0.1.0":
        if url.startswith("sqlite"):
            url = sqlite_v1(tmp_path)
        else:
            postgresql_v1_from_ddl(url, tmp_path)
    upgrades: list[int] = []
    lock = threading.Lock()

    def counted(migration: Migration) -> Migration:
        def upgrade(conn: Connection) -> None:
            with lock:
                upgrades.append(migration.version)
            migration.upgrade(conn)

        return Migration(migration.version, migration.description, upgrade)

    monkeypatch.setattr(schema, "MIGRATIONS", [counted(m) for m in MIGRATIONS])

    def open_everything() -> None:
        # Each with its own engine, as separate runs have.
        state = StateStore(url)
        try:
            AuditLog(state.engine)
            state.list_runs()
        finally:
            state.close()

    assert _together(open_everything) == []
    assert stored(url) == latest_version()
    assert table_names(url) == STATE_TABLES
    # A fresh database is created at the latest version; 0.1.0's is migrated exactly once.
    assert upgrades == ([] if start == "fresh" else [m.version for m in MIGRATIONS])


def test_processes_opening_a_0_1_0_database_together_all_succeed(v1_url: str) -> None:
    code = (
        "import sys\n"
        "from reconcile.state.store import StateStore\n"
        "sys.stdin.readline()\n"  # all started: go
        "StateStore(sys.argv[1]).close()\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, v1_url],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    outcomes = [(process.wait(timeout=120), process.stderr) for process in processes]
    errors = [stream.read() if stream else "" for _, stream in outcomes]
    assert [code for code, _ in outcomes] == [0, 0, 0], errors
    assert stored(v1_url) == latest_version()


# Ownership --------------------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_state_package_imports_nothing_above_it() -> None:
    for path in sorted((ROOT / "reconcile" / "state").glob("*.py")):
        for module in _imports(path):
            top = module.split(".")[0]
            assert top not in ("jobs", "reports", "sandbox"), (path.name, module)
            assert not module.startswith("reconcile.listing"), (path.name, module)


_DECLARES_STATE_TABLE = re.compile(r"sa\.Table\(\s*f?[\"'](\{TABLE_PREFIX\}|stripe_reconcile_)")
_RAW_SQL = re.compile(r"sa\.text\(|exec_driver_sql\(")


def test_only_the_state_package_touches_the_state_tables() -> None:
    # One owner: the listing layer and the jobs ask reconcile.state, never its tables.
    for package in ("reconcile", "jobs", "reports", "sandbox", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith("reconcile/state/"):
                continue
            assert "reconcile.state.tables" not in _imports(path), relative


def test_state_tables_are_declared_and_queried_in_one_place() -> None:
    for package in ("reconcile", "jobs", "reports"):
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            relative = path.relative_to(ROOT).as_posix()
            if relative != "reconcile/state/tables.py":
                assert not _DECLARES_STATE_TABLE.search(text), relative
            if not relative.startswith("reconcile/state/"):
                for line in text.splitlines():
                    if _RAW_SQL.search(line):
                        assert "stripe_reconcile" not in line, relative
