"""Paths in a config file are relative to that file; a missing file is named with the ways
to give one; without any file the user database is never created."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobs.commands.cli import cli
from reconcile.errors import EXIT_CONFIG, ConfigError
from reconcile.settings import load_settings
from tests.seeded import TEST_KEY, SeededWorld

CONFIG = """\
[userdb]
url = "sqlite:///data/users.db"
[state]
url = "sqlite:///state.db"
[reports]
out = "reports"
[card_expiry]
reminder_template = "templates/reminder.txt.j2"
[metrics]
textfile_dir = "prom"
[incremental]
dir = "mirror"
[schedule.jobs.reconcile]
cron = "17 3 * * *"
out = "nightly"
"""


def test_relative_paths_resolve_against_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "config.toml").write_text(CONFIG)
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # cron starts in $HOME

    settings = load_settings(Path("../etc/config.toml"), env={})

    assert settings.userdb.url == f"sqlite:///{etc / 'data' / 'users.db'}"
    assert settings.state.url == f"sqlite:///{etc / 'state.db'}"
    assert settings.reports.out == etc / "reports"
    assert settings.card_expiry.reminder_template == etc / "templates" / "reminder.txt.j2"
    assert settings.metrics.textfile_dir == str(etc / "prom")
    assert settings.incremental.dir == str(etc / "mirror")
    assert settings.schedule.jobs["reconcile"].out == str(etc / "nightly")


def test_absolute_in_memory_and_server_urls_and_environment_values_are_kept(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[userdb]\nurl = "postgresql+psycopg://app@db.internal/app"\n'
        '[state]\nurl = "sqlite:////var/lib/sr/state.db?timeout=5"\n'
        '[reports]\nout = "/srv/reports"\n'
    )
    settings = load_settings(config, env={})
    assert settings.userdb.url == "postgresql+psycopg://app@db.internal/app"
    assert settings.state.url == "sqlite:////var/lib/sr/state.db?timeout=5"
    assert settings.reports.out == Path("/srv/reports")

    memory = tmp_path / "memory.toml"
    memory.write_text('[state]\nurl = "sqlite://"\n')
    assert load_settings(memory, env={}).state.url == "sqlite://"

    # The environment's URL is the operator's, taken as given.
    from_env = load_settings(config, env={"STRIPE_RECONCILE_USERDB_URL": "sqlite:///relative.db"})
    assert from_env.userdb.url == "sqlite:///relative.db"


@pytest.mark.parametrize("how", ["--config", "STRIPE_RECONCILE_CONFIG"])
def test_a_missing_config_file_is_one_line_naming_it_and_the_ways_to_give_one(
    tmp_path: Path, how: str
) -> None:
    missing = tmp_path / "nope.toml"
    args, env = (
        (["--config", str(missing), "check"], {})
        if how == "--config"
        else (["check"], {"STRIPE_RECONCILE_CONFIG": str(missing)})
    )
    result = CliRunner().invoke(cli, args, env={"STRIPE_SECRET_KEY": TEST_KEY, **env})
    assert result.exit_code == EXIT_CONFIG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        f"stripe-reconcile: error: configuration file {missing} (from {how}) not found: pass "
        "an existing file with --config PATH or STRIPE_RECONCILE_CONFIG=PATH, or neither for "
        "the built-in defaults"
    )


def test_without_a_config_the_user_database_is_never_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STRIPE_RECONCILE_CONFIG", raising=False)
    result = CliRunner().invoke(cli, ["check"], env={"STRIPE_SECRET_KEY": TEST_KEY})
    assert result.exit_code != 0
    assert not (tmp_path / "users.db").exists()
    line = next(x for x in result.stdout.splitlines() if x.startswith("FAIL  user database"))
    assert f"the user database file {tmp_path / 'users.db'} does not exist" in line
    assert "never created" in line
    assert "--config PATH or STRIPE_RECONCILE_CONFIG" in line
    # It is not blamed on the table any more.
    assert "table 'users' not found" not in result.stdout


def test_a_run_from_another_folder_uses_the_files_beside_its_config(
    world: SeededWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    source = Path(world.users_url.removeprefix("sqlite:///"))
    with sqlite3.connect(source) as src, sqlite3.connect(etc / "users.db") as dst:
        src.backup(dst)
    (etc / "config.toml").write_text(
        '[userdb]\nurl = "sqlite:///users.db"\nscope = { env = "prod" }\n'
        '[state]\nurl = "sqlite:///state.db"\n[reports]\nout = "out"\n'
    )
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.chdir(home)
    result = CliRunner().invoke(
        cli,
        ["run", "reconcile", "--config", str(etc / "config.toml")],
        env={"STRIPE_SECRET_KEY": TEST_KEY, "STRIPE_API_BASE": world.sandbox.url},
    )
    assert result.exit_code == 0, result.stderr
    assert (etc / "state.db").is_file()
    assert list((etc / "out" / "reconcile").iterdir())
    assert os.listdir(home) == []


def test_a_config_file_path_with_a_tilde_is_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text('[reports]\nout = "~/reports"\n')
    settings = load_settings(Path("~/config.toml"), env={})
    assert settings.reports.out == tmp_path / "reports"
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_settings(Path("~/nope.toml"), env={})
