"""`run JOB` built from the job registry and its options model, and a start-up that imports
nothing heavy: what `--help` costs is checked by what it imports, not by a stopwatch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from jobs.commands.cli import LAZY_COMMANDS, cli
from jobs.commands.run_jobs import field_option, job_command
from jobs.registry import CATALOGUE, JOBS, READ_ONLY_JOBS, load_job
from reconcile.job_options import OPTION_MODELS, JobOptions, ReconcileOptions, WriteJobOptions

README = Path(__file__).resolve().parents[2] / "README.md"
ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "pyarrow", "numpy", "stripe", "sqlalchemy", "requests", "aiohttp")


def imported_after(code: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after running `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    modules: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return set(modules)


def cli_call(*args: str) -> str:
    return (
        "from jobs.commands.cli import cli\n"
        f"try:\n    cli.main({list(args)!r}, prog_name='stripe-reconcile')\n"
        "except SystemExit:\n    pass"
    )


def test_importing_the_cli_imports_no_heavy_library() -> None:
    loaded = imported_after("import jobs.commands.cli")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert "pydantic" not in loaded
    assert not {name for name in loaded if name.startswith("jobs.") and name.endswith("_job")}


@pytest.mark.parametrize(
    "args",
    [["--help"], ["run", "--help"], ["run", "reconcile", "--help"], ["check", "--help"]],
)
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    loaded = imported_after(cli_call(*args))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert "jobs.runner" not in loaded
    if args in (["--help"], ["run", "--help"]):
        # A group's help configures no logging: structlog is most of its cost.
        assert "structlog" not in loaded


def test_the_registry_names_the_jobs_without_importing_them() -> None:
    loaded = imported_after(
        "from jobs.registry import JOBS, READ_ONLY_JOBS\n"
        "assert 'reconcile' in JOBS and len(JOBS) == 7 and sorted(JOBS)\n"
        "assert READ_ONLY_JOBS == ('reconcile', 'card-expiry')"
    )
    assert not {name for name in loaded if name.startswith("jobs.") and name.endswith("_job")}
    assert not loaded & set(HEAVY)


def test_looking_a_job_up_imports_that_job_only() -> None:
    loaded = imported_after("from jobs.registry import JOBS\nJOBS['reconcile']")
    jobs = {name for name in loaded if name.startswith("jobs.") and name.endswith("_job")}
    assert jobs == {"jobs.reconcile_job"}


def test_each_job_declares_the_options_model_of_the_catalogue() -> None:
    assert [entry.name for entry in CATALOGUE] == list(OPTION_MODELS)
    assert READ_ONLY_JOBS == ("reconcile", "card-expiry")
    for entry in CATALOGUE:
        job = load_job(entry.name)
        assert job.name == entry.name
        assert job.writes == entry.writes, entry.name
        assert job.options_model is OPTION_MODELS[entry.name], entry.name
        assert issubclass(job.options_model, WriteJobOptions) == job.writes, entry.name
    with pytest.raises(KeyError):
        JOBS["reconcil"]


def test_declared_help_is_the_loaded_commands_help() -> None:
    """What `--help` lists before a command is imported is what the command says."""
    for name, _module, _attr, declared in LAZY_COMMANDS:
        assert cli.commands[name].help == declared, name
    run = cli.commands["run"]
    assert isinstance(run, click.Group)
    for entry in CATALOGUE:
        assert run.commands[entry.name].help == entry.help, entry.name


def test_help_lists_the_same_lines_before_and_after_the_commands_load() -> None:
    def help_text(load_first: str) -> str:
        code = f"{load_first}\n{cli_call('--help')}"
        env = {**os.environ, "COLUMNS": "100"}
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    lazily = help_text("")
    loaded = help_text(
        "from jobs.commands.cli import cli\nfor name in list(cli.commands): cli.commands[name]"
    )
    assert lazily == loaded
    assert "customer  Find, create, update or delete one customer." in lazily


def test_every_model_field_is_a_flag_of_its_run_command() -> None:
    for entry in CATALOGUE:
        command = job_command(entry)
        model = OPTION_MODELS[entry.name]
        names = {param.name for param in command.params}
        assert set(model.model_fields) <= names, entry.name
        assert {"config_path", "out_dir", "as_json"} <= names
        for param in command.params:
            if param.name in model.model_fields:
                assert isinstance(param, click.Option)
                assert param.help == model.model_fields[param.name].description


def test_flags_take_their_shape_from_the_field_type() -> None:
    incremental = field_option("incremental", ReconcileOptions.model_fields["incremental"])
    assert incremental.opts == ["--incremental"]
    assert incremental.secondary_opts == ["--full"]
    assert incremental.default is None
    email = field_option("email", JobOptions.model_fields["email"])
    assert (email.opts, email.secondary_opts) == (["--email"], ["--no-email"])
    fail_on = field_option("fail_on", JobOptions.model_fields["fail_on"])
    assert isinstance(fail_on.type, click.Choice)
    assert list(fail_on.type.choices) == ["info", "warning", "error"]
    max_changes = field_option("max_changes", WriteJobOptions.model_fields["max_changes"])
    assert isinstance(max_changes.type, click.IntRange)
    assert (max_changes.type.min, max_changes.type.max, max_changes.default) == (0, None, 100)
    days = field_option("days", OPTION_MODELS["card-expiry"].model_fields["days"])
    assert isinstance(days.type, click.IntRange)
    assert (days.type.min, days.type.max, days.default) == (0, 3650, None)
    apply = field_option("apply", WriteJobOptions.model_fields["apply"])
    assert apply.is_flag
    assert apply.default is False


def test_every_flag_the_readme_shows_for_a_run_command_exists() -> None:
    readme = README.read_text()
    shown = re.findall(r"^### `stripe-reconcile run ([a-z-]+) ([^`]*)`", readme, re.M)
    assert {name for name, _ in shown} >= {"reconcile", "card-expiry", "dedupe", "link-users"}
    for name, usage in shown:
        run = cli.commands["run"]
        assert isinstance(run, click.Group)
        command = run.commands[name]
        flags = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
        for flag in re.findall(r"--[a-z-]+", usage):
            assert flag in flags, f"README shows run {name} {flag}"
    for line in re.findall(r"^(?:\$ )?stripe-reconcile (run [a-z-]+ [^#\n]*)", readme, re.M):
        words = line.split()
        run = cli.commands["run"]
        assert isinstance(run, click.Group)
        command = run.commands[words[1]]
        flags = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
        for flag in (word for word in words[2:] if word.startswith("--")):
            assert flag in flags, f"README runs {line!r}"


def test_help_shows_each_flag_with_its_help() -> None:
    result = CliRunner().invoke(cli, ["run", "card-expiry", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for flag in ["--days", "--all-cards", "--send", "--preview", "--confirm-live"]:
        assert flag in result.stdout
    assert "--incremental / --full" in result.stdout
    assert "--email / --no-email" in result.stdout
    assert "Allow --send in live mode (unattended: STRIPE_RECONCILE_CONFIRM_LIVE=1)." in (
        result.stdout
    )
    writer = CliRunner().invoke(cli, ["run", "dedupe", "--help"], terminal_width=200)
    assert "[default: 100; x>=0]" in writer.stdout
    assert "--incremental" not in writer.stdout


def test_a_job_refuses_options_of_another_model() -> None:
    from jobs.options import run_job

    with pytest.raises(TypeError, match="dedupe takes WriteJobOptions, not ReconcileOptions"):
        run_job(JOBS["dedupe"], None, ReconcileOptions())  # type: ignore[arg-type]
