"""The command line as a user meets it: whole outputs, exit codes, one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from jobs.commands.cli import cli
from reconcile.state.store import StateStore
from tests.seeded import TEST_KEY, SeededWorld

REVOKED_KEY = "sk_test_" + "Unknown0000000000zzzz"
README = Path(__file__).resolve().parents[2] / "README.md"


def write_config(world: SeededWorld, tmp_path: Path, **overrides: str) -> Path:
    settings = world.settings
    userdb = {"url": settings.userdb.url, "scope": '{ env = "prod" }', **overrides}
    lines = ["[userdb]"]
    for key, value in userdb.items():
        lines.append(f"{key} = {value}" if value.startswith("{") else f'{key} = "{value}"')
    lines += [
        "[state]",
        f'url = "{settings.state.url}"',
        "[reports]",
        f'out = "{tmp_path / "out"}"',
    ]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def invoke(args: list[str], env: dict[str, str]) -> click.testing.Result:
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


def env_for(world: SeededWorld, key: str = TEST_KEY) -> dict[str, str]:
    return {"STRIPE_SECRET_KEY": key, "STRIPE_API_BASE": world.sandbox.url}


def one_error_line(result: click.testing.Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("stripe-reconcile:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    return lines[0]


def all_commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    ctx = click.Context(group)  # list_commands/get_command: entry-point commands too
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        full = f"{prefix}{name}"
        found.append((full, command))
        if isinstance(command, click.Group):
            found += all_commands(command, f"{full} ")
    return found


def test_every_command_has_help_and_a_place_in_the_readme() -> None:
    readme = README.read_text()
    for name, command in all_commands(cli):
        assert command.help, f"{name} has no help text"
        assert f"stripe-reconcile {name}" in readme, f"README does not mention {name}"


def test_run_reconcile_prints_a_summary_then_the_run_folder(
    world: SeededWorld, tmp_path: Path
) -> None:
    config = write_config(world, tmp_path)
    result = invoke(["run", "reconcile", "--config", str(config)], env_for(world))
    assert result.exit_code == 0, result.output + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert Path(last).is_dir()
    assert (Path(last) / "findings.csv").is_file()
    assert re.search(r"reconcile run \S+ \(test mode\)", result.stdout)
    assert "orphan_customer" in result.stdout


def test_fail_on_turns_findings_into_exit_1(world: SeededWorld, tmp_path: Path) -> None:
    config = write_config(world, tmp_path)
    result = invoke(
        ["--config", str(config), "run", "reconcile", "--fail-on", "error"], env_for(world)
    )
    assert result.exit_code == 1
    assert Path(result.stdout.strip().splitlines()[-1]).is_dir()


def test_bad_configuration_exits_2(world: SeededWorld, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[userdb]\ntabel = 'users'\n")
    result = invoke(["run", "reconcile", "--config", str(config)], env_for(world))
    assert result.exit_code == 2
    assert "[userdb] tabel: unknown setting" in one_error_line(result)


def test_refused_key_exits_3_without_showing_it(world: SeededWorld, tmp_path: Path) -> None:
    config = write_config(world, tmp_path)
    key = "sk_test_" + "Revoked0000000000wxyz"
    world.sandbox.state.revoked_keys.add(key)
    result = invoke(["run", "reconcile", "--config", str(config)], env_for(world, key=key))
    line = one_error_line(result)
    assert result.exit_code == 3
    assert key not in result.output + result.stderr
    assert "sk_test_...wxyz" in line


def test_missing_table_exits_4(world: SeededWorld, tmp_path: Path) -> None:
    config = write_config(world, tmp_path, table="members")
    result = invoke(["run", "reconcile", "--config", str(config)], env_for(world))
    assert result.exit_code == 4
    assert "[userdb] table 'members' not found" in one_error_line(result)


def test_second_concurrent_run_exits_5(world: SeededWorld, tmp_path: Path) -> None:
    config = write_config(world, tmp_path)
    store = StateStore(world.settings.state.url)
    with store.lease("reconcile", "someone-else", 60):
        result = invoke(["run", "reconcile", "--config", str(config)], env_for(world))
    store.close()
    assert result.exit_code == 5
    assert "lock" in one_error_line(result)


def test_check_passes_and_shows_the_key_masked(world: SeededWorld, tmp_path: Path) -> None:
    config = write_config(world, tmp_path)
    result = invoke(["check", "--config", str(config)], env_for(world))
    assert result.exit_code == 0, result.stdout
    assert "sk_test_...abcd (test mode)" in result.stdout
    assert TEST_KEY not in result.stdout
    assert re.search(r"table users: \d+ rows", result.stdout)
    assert result.stdout.strip().endswith("all checks passed")


@pytest.mark.parametrize(
    ("key", "overrides", "code", "expected"),
    [
        ("", {}, 2, "STRIPE_SECRET_KEY is empty"),
        (REVOKED_KEY, {}, 3, "refused"),
        (TEST_KEY, {"email_column": "mail"}, 4, "column 'mail'"),
    ],
)
def test_check_names_each_problem(
    world: SeededWorld,
    tmp_path: Path,
    key: str,
    overrides: dict[str, str],
    code: int,
    expected: str,
) -> None:
    config = write_config(world, tmp_path, **overrides)
    world.sandbox.state.revoked_keys.add(REVOKED_KEY)
    result = invoke(["check", "--config", str(config)], env_for(world, key=key))
    assert result.exit_code == code
    assert expected in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
