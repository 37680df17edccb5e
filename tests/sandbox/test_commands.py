"""`stripe-reconcile sandbox` and `demo` reach the CLI through an entry point, never through
an import by the product; the README's sandbox command runs again in the same folder."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from reconcile.errors import UserDBError
from sandbox.seed import MIN_CUSTOMERS, generate_account, write_users_db
from tests.sandbox.conftest import TEST_KEY

SCRIPT = Path(sys.executable).with_name("stripe-reconcile")
NOW = 1_790_000_000


def _personal_data(customers: int, seed: int) -> set[str]:
    account = generate_account(customers, seed=seed)
    return {
        str(row[field]).strip()
        for row in account.users
        for field in ("email", "name")
        if row.get(field) and len(str(row[field]).strip()) >= 6
    }


def _serve_once(folder: Path, *extra: str) -> tuple[list[str], str, int]:
    """Run the README's sandbox command in `folder`, query it, stop it with SIGTERM."""
    command = [
        str(SCRIPT),
        "sandbox",
        "--port",
        "0",
        "--seed-customers",
        "300",
        "--latency-ms",
        "1",
        "--jitter-ms",
        "1",
        "--users-db",
        "users.db",
        "--ground-truth",
        "planted.json",
        *extra,
    ]
    process = subprocess.Popen(
        command,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        if first.startswith("Stripe sandbox listening on "):
            url = first.rsplit(" ", 1)[1]
            said = process.stdout.readline().strip()
            page = requests.get(
                f"{url}/v1/customers?limit=2",
                headers={"Authorization": f"Bearer {TEST_KEY}"},
                timeout=10,
            )
            assert page.status_code == 200
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
            lines = [first, said, *out.splitlines()]
        else:
            out, err = process.communicate(timeout=30)
            lines = [first, *out.splitlines()]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return lines, err, process.returncode


def test_the_readme_sandbox_command_runs_again_in_the_same_folder(tmp_path: Path) -> None:
    first, first_err, first_code = _serve_once(tmp_path)
    assert first_code == 0, first_err
    assert first[1].startswith("users table in users.db: written, ")
    assert first[1].endswith(" users")
    rows_after_first = _users(tmp_path / "users.db")

    second, second_err, second_code = _serve_once(tmp_path)
    assert second_code == 0, second_err
    assert "Traceback" not in second_err
    assert second[0].startswith("Stripe sandbox listening on http://127.0.0.1:")
    assert second[1].startswith("users table in users.db: reseeded (an earlier sandbox run")
    assert second[-1] == "Stripe sandbox stopped"
    # Reseeded, not appended: the same seed gives the same users, once each.
    assert _users(tmp_path / "users.db") == rows_after_first
    assert json.loads((tmp_path / "planted.json").read_text())["findings"]
    seeded = _personal_data(300, 0)
    assert len(seeded) > 50
    for text in ("\n".join(first + second), first_err + second_err):
        assert [value for value in seeded if value in text] == []


def _users(path: Path) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        query = "select id, email, stripe_customer_id from users order by id"
        return conn.execute(query).fetchall()


def test_a_users_table_the_sandbox_did_not_write_is_left_alone(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "users.db")) as conn, conn:
        conn.execute("create table users (id integer primary key, email text)")
        conn.execute("insert into users values (1, 'real.person@example.com')")
    lines, err, code = _serve_once(tmp_path)
    assert code == 4, (lines, err)
    assert err.strip().splitlines() == [
        "stripe-reconcile: error: users.db already has a users table the sandbox did not write "
        "(or wrote before it marked its tables); it is left alone: remove it or give "
        "--users-db another database"
    ]
    with closing(sqlite3.connect(tmp_path / "users.db")) as conn:
        assert conn.execute("select * from users").fetchall() == [(1, "real.person@example.com")]


def test_write_users_db_reseeds_its_own_table_on_both_engines(database_url: str) -> None:
    first = generate_account(MIN_CUSTOMERS, seed=3, now=NOW)
    second = generate_account(MIN_CUSTOMERS + 40, seed=4, now=NOW)
    assert write_users_db(first, database_url) is False
    assert write_users_db(second, database_url) is True
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            ids = conn.execute(sa.text("select id, stripe_customer_id from users order by id"))
            rows = [tuple(row) for row in ids]
            mark = conn.execute(sa.text("select seed, customers from stripe_sandbox_seed")).all()
    finally:
        engine.dispose()
    assert rows == sorted((u["id"], u["stripe_customer_id"]) for u in second.users)
    assert [tuple(row) for row in mark] == [(4, len(second.customers))]


def test_write_users_db_refuses_a_foreign_users_table_on_both_engines(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table users (id integer primary key, email text)"))
            conn.execute(sa.text("insert into users values (7, 'kept@example.com')"))
        with pytest.raises(UserDBError, match="did not write"):
            write_users_db(generate_account(MIN_CUSTOMERS, seed=3, now=NOW), database_url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("select id, email from users")).all() == [
                (7, "kept@example.com")
            ]
            assert "stripe_sandbox_seed" not in sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()


def test_a_users_db_that_cannot_be_written_is_one_line_without_rows_or_password() -> None:
    account = generate_account(MIN_CUSTOMERS, seed=3, now=NOW)
    url = "postgresql+psycopg://someone:hunter2secret@127.0.0.1:1/nowhere?connect_timeout=2"
    with pytest.raises(UserDBError) as raised:
        write_users_db(account, url)
    message = raised.value.message
    assert message.startswith(
        "could not write the users table to postgresql+psycopg://someone:***@"
    )
    assert "hunter2secret" not in message
    assert "\n" not in message
    assert not any(user["name"] in message for user in account.users if user["name"])


# --- the entry points -----------------------------------------------------------------------

# What `--help` and `run --help` may load: the CLI, and for the root help the sandbox's
# light command module; never the server (aiohttp), the seeding or the demo's jobs.
_PROBE = textwrap.dedent(
    """
    import json, sys
    import jobs.commands.plugins

    scanned = []
    real = jobs.commands.plugins.entry_points
    def counting(**kwargs):
        scanned.append(kwargs.get("group"))
        return real(**kwargs)
    jobs.commands.plugins.entry_points = counting

    from jobs.commands.cli import cli
    try:
        cli.main(sys.argv[1:], prog_name="stripe-reconcile", standalone_mode=False)
    except SystemExit:
        pass
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("sandbox", "aiohttp"))
    print(json.dumps({"loaded": loaded, "scanned": scanned}))
    """
)


def _probe(*args: str) -> tuple[str, dict[str, list[str]]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    *shown, last = done.stdout.strip().splitlines()
    return "\n".join(shown), json.loads(last)


def test_help_lists_the_entry_point_commands_without_importing_the_server() -> None:
    shown, seen = _probe("--help")
    listed = {line.split()[0] for line in shown.split("Commands:")[1].splitlines() if line.strip()}
    assert {"sandbox", "demo", "run", "check"} <= listed
    assert seen["scanned"] == ["stripe_reconcile.commands"]
    assert seen["loaded"] == ["sandbox", "sandbox.commands"]


def test_a_built_in_command_never_reads_the_entry_points() -> None:
    _, seen = _probe("run", "--help")
    assert seen == {"loaded": [], "scanned": []}


def test_the_sandbox_help_comes_from_the_entry_point() -> None:
    done = subprocess.run(
        [str(SCRIPT), "sandbox", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "--seed-customers" in done.stdout
    assert "--users-db" in done.stdout


# Without the `sandbox` extra: aiohttp cannot be found (a failure, simulated at import).
_WITHOUT_AIOHTTP = textwrap.dedent(
    """
    import sys

    class NoAiohttp:
        def find_spec(self, name, path=None, target=None):
            if name == "aiohttp" or name.startswith("aiohttp."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoAiohttp())
    from jobs.commands.cli import main
    sys.argv = ["stripe-reconcile", *sys.argv[1:]]
    main()
    """
)


@pytest.mark.parametrize(
    "args",
    [
        ["sandbox", "--port", "0", "--seed-customers", "10"],
        ["demo"],
        ["demo", "--customers", "60", "--no-such-option"],
    ],
)
def test_without_the_extra_a_command_says_how_to_install_it(
    tmp_path: Path, args: list[str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_AIOHTTP, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"stripe-reconcile: error: `{args[0]}` is not available (No module named 'aiohttp'): "
        "install it with pip install 'stripe-reconcile[sandbox]'"
    ]
    assert not list(tmp_path.iterdir())


def test_without_the_extra_help_still_lists_the_commands() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_AIOHTTP, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "sandbox   (not installed: pip install 'stripe-reconcile[sandbox]')" in done.stdout
    assert "check" in done.stdout
