"""The key never leaks and personal data stays out of logs: every command is run with a
known key against a seeded sandbox, and everything it prints and writes is scanned.

Also: report files are 0600 for every job; a restricted key (rk_) runs the read-only jobs;
a missing permission (403) is one line that names it.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import click
import pytest
import sqlalchemy as sa

from jobs.commands.cli import cli
from jobs.registry import JOBS
from reconcile.errors import EXIT_STRIPE
from reconcile.state.store import StateStore
from reconcile.userdb import read_only_engine
from tests.reliability.helpers import base_sections, env_for, error_lines, invoke, write_config
from tests.seeded import TEST_KEY, SeededWorld

# Any full Stripe key: a prefix then the secret part. Masked keys (sk_test_...abcd) do not match.
FULL_KEY = re.compile(rb"(?:sk|rk)_(?:test|live)_[A-Za-z0-9]{5,}")
SECRET_PART = TEST_KEY.removeprefix("sk_test_")
RESTRICTED_KEY = "rk_test_" + "ReadOnlyKey000000wxyz"

# Long-running servers: `sandbox` never holds the project's key (it is the server the key
# is sent to; tests/cli/test_console.py runs it and stops it), `serve` runs the schedule
# until stopped (its jobs are the `run` commands scanned here).
NOT_RUN = {"sandbox", "serve"}


def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    ctx = click.Context(group)  # list_commands/get_command: entry-point commands too
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        path = (*prefix, name)
        if isinstance(command, click.Group):
            found.append(path)  # groups may run on their own (`runs`)
            found += leaf_commands(command, path)
        else:
            found.append(path)
    return found


def arguments_for(path: tuple[str, ...], world: SeededWorld, tmp_path: Path) -> list[str]:
    """Arguments that make each command do real work against the seeded account."""
    customers = [
        c for c in world.account.customers if c["id"] not in world.account.deleted_customer_ids
    ]
    first, second = customers[0], customers[1]
    words = " ".join(path)
    if path[0] == "run" and len(path) == 2:
        writes = JOBS[path[1]].writes if path[1] in JOBS else False
        return ["--apply", "--max-changes", "100000"] if writes else []
    table: dict[str, list[str]] = {
        "demo": ["--customers", "60", "--out", str(tmp_path / "demo")],
        "customer find": ["--email", str(first.get("email") or "nobody@example.com")],
        "customer get-or-create": [
            "--user-id",
            "u-secret-test",
            "--email",
            "new.person@example.com",
        ],
        "customer update-metadata": [first["id"], "plan=gold"],
        "customer attach-pm": [first["id"], "pm_card_visa", "--default"],
        "customer delete": [second["id"]],
        "schedule": ["--count", "2"],
    }
    return table.get(words, [])


def takes_config(path: tuple[str, ...]) -> bool:
    command: click.Command = cli
    for word in path:
        assert isinstance(command, click.Group)
        command = command.commands[word]
    return any("--config" in p.opts for p in command.params)


def personal_data(world: SeededWorld) -> set[str]:
    values: set[str] = set()
    for row in [*world.account.users, *world.account.customers]:
        for field in ("email", "name"):
            value = row.get(field)
            if isinstance(value, str) and len(value.strip()) >= 6:
                values.add(value.strip())
    return values


def test_no_command_prints_or_writes_the_key_and_logs_hold_no_personal_data(
    small_world: SeededWorld, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = write_config(tmp_path / "config.toml", base_sections(small_world, out))
    env = env_for(small_world)
    printed: dict[str, tuple[str, str]] = {}
    paths = [p for p in leaf_commands(cli) if p[0] not in NOT_RUN]
    # Run jobs first, so `runs` and `runs show` have something to show.
    paths.sort(key=lambda p: (p[0] != "run", p))
    for path in paths:
        args = [*path, *arguments_for(path, small_world, tmp_path)]
        if path == ("runs", "show"):
            from reconcile.state.store import StateStore

            store = StateStore(small_world.settings.state.url)
            args.append(store.list_runs(limit=1)[0].run_id)
            store.close()
        if takes_config(path):
            args += ["--config", str(config)]
        result = invoke(args, env)
        printed[" ".join(path)] = (result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr, (path, result.stderr)

    assert {"run reconcile", "check", "demo"} <= set(printed)
    secrets = personal_data(small_world)
    assert len(secrets) > 50
    for words, (stdout, stderr) in printed.items():
        for text in (stdout, stderr):
            assert not FULL_KEY.search(text.encode()), (words, FULL_KEY.search(text.encode()))
            assert SECRET_PART not in text
        # stderr carries the logs and error lines: no seeded email or name there.
        leaked = [value for value in secrets if value in stderr]
        assert leaked == [], (words, leaked[:3])
    assert "sk_test_...abcd" in printed["check"][0]

    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "users.db"]
    assert any(p.suffix == ".db" for p in written)  # the state database is scanned too
    assert any(p.name == "summary.json" for p in written)
    for path in written:
        data = path.read_bytes()
        assert not FULL_KEY.search(data), (path, FULL_KEY.search(data))
        assert SECRET_PART.encode() not in data, path


def test_every_jobs_report_files_are_readable_by_the_owner_only(
    small_world: SeededWorld, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = write_config(tmp_path / "config.toml", base_sections(small_world, out))
    for name in JOBS:
        result = invoke(["run", name, "--config", str(config)], env_for(small_world))
        assert result.exit_code == 0, (name, result.stderr)
        run_dir = Path(result.stdout.strip().splitlines()[-1])
        files = [p for p in run_dir.iterdir() if p.is_file()]
        assert files, name
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, (name, path.name)
        assert stat.S_IMODE(run_dir.stat().st_mode) & 0o077 == 0, name


def test_a_restricted_key_runs_the_read_only_jobs(small_world: SeededWorld, tmp_path: Path) -> None:
    small_world.sandbox.state.read_only_keys.add(RESTRICTED_KEY)
    config = write_config(tmp_path / "config.toml", base_sections(small_world, tmp_path / "out"))
    for name, job in JOBS.items():
        if job.writes:
            continue
        restricted = invoke(
            ["run", name, "--config", str(config)], env_for(small_world, RESTRICTED_KEY)
        )
        assert restricted.exit_code == 0, (name, restricted.stderr)
        assert "rk_test_...wxyz" in restricted.stderr  # the run's log names the key, masked
        assert RESTRICTED_KEY not in restricted.stdout + restricted.stderr


def writing_commands() -> list[list[str]]:
    commands = [
        ["run", name, "--apply", "--max-changes", "100000"]
        for name, job in JOBS.items()
        if job.writes
    ]
    if "customer" in cli.commands:
        commands.append(["customer", "update-metadata", "{customer}", "plan=gold"])
    return commands


@pytest.mark.parametrize("command", writing_commands(), ids=lambda c: " ".join(c[:2]))
def test_a_missing_permission_is_one_line_naming_it(
    small_world: SeededWorld, tmp_path: Path, command: list[str]
) -> None:
    small_world.sandbox.state.read_only_keys.add(RESTRICTED_KEY)
    config = write_config(tmp_path / "config.toml", base_sections(small_world, tmp_path / "out"))
    customer = next(
        c["id"]
        for c in small_world.account.customers
        if c["id"] not in small_world.account.deleted_customer_ids
    )
    args = [word.replace("{customer}", customer) for word in command]
    writes_before = [
        e for e in small_world.sandbox.request_log.entries() if e.method in ("POST", "DELETE")
    ]
    result = invoke([*args, "--config", str(config)], env_for(small_world, RESTRICTED_KEY))
    if result.exit_code == 0:
        # A plan with nothing to write never meets the missing permission.
        attempted = [
            e for e in small_world.sandbox.request_log.entries() if e.method in ("POST", "DELETE")
        ]
        assert attempted == writes_before, result.stdout
        pytest.skip(f"{' '.join(command[:2])} planned no write on this account")
    assert result.exit_code in (EXIT_STRIPE, 6), result.stderr
    text = result.stdout + result.stderr
    assert "rak_customer_write" in text
    assert "Traceback" not in text
    if result.exit_code == EXIT_STRIPE:
        assert len(error_lines(result)) == 1


def test_a_database_error_carries_no_bound_email(tmp_path: Path, database_url: str) -> None:
    # The users' and the audit's emails are bound parameters: SQLAlchemy would print them
    # in the error (and so in a traceback or a log) unless the engines hide them.
    users_file = tmp_path / "users.db"
    writable = sa.create_engine(f"sqlite:///{users_file}")
    with writable.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    writable.dispose()
    email = "private.person@example.com"
    engines = [read_only_engine(f"sqlite:///{users_file}")]
    state = StateStore(database_url)
    engines.append(state.engine)
    try:
        for engine in engines:
            with pytest.raises(sa.exc.DBAPIError) as raised, engine.begin() as conn:
                conn.execute(
                    sa.text("INSERT INTO no_such_table (email) VALUES (:email)"), {"email": email}
                )
            assert email not in str(raised.value)
            assert "hidden due to hide_parameters" in str(raised.value)
    finally:
        engines[0].dispose()
        state.close()
