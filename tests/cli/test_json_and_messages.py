"""`--json` for scripts, the line that says why a run exits 1, `--preview` of reminders,
and the plan of a dry run or a refused --apply: through the real CLI, the sandbox and SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click.testing
import pandas as pd
import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from jobs.commands.cli import cli
from sandbox.runner import SandboxServer
from tests.cards.conftest import SmtpHandler, SmtpServer, free_port
from tests.maintenance.world import MaintenanceWorld, build
from tests.seeded import TEST_KEY, SeededWorld

RUN_KEYS = [
    "job",
    "run_id",
    "folder",
    "status",
    "exit_code",
    "mode",
    "counts_by_kind",
    "changes",
    "message",
    "warnings",
]


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    handler = SmtpHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        controller.stop()


@pytest.fixture
def mworld(sandbox_server: SandboxServer, tmp_path: Path) -> MaintenanceWorld:
    return build(sandbox_server, tmp_path, f"sqlite:///{tmp_path / 'users.db'}")


def write_config(settings: Any, tmp_path: Path, extra: str = "", scope: bool = True) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[userdb]\nurl = "{settings.userdb.url}"\n'
        + ('scope = { env = "prod" }\n' if scope else "")
        + f'[state]\nurl = "{settings.state.url}"\n'
        f'[reports]\nout = "{tmp_path / "out"}"\n{extra}'
    )
    return path


def invoke(url: str, config: Path, args: list[str], key: str = TEST_KEY) -> click.testing.Result:
    env = {
        "STRIPE_SECRET_KEY": key,
        "STRIPE_API_BASE": url,
        "STRIPE_RECONCILE_CONFIRM_LIVE": None,
        "SMTP_PASSWORD": None,
    }
    return CliRunner().invoke(
        cli,
        ["--config", str(config), *args],
        env=env,  # type: ignore[arg-type]
        catch_exceptions=False,
    )


def only_json(result: click.testing.Result) -> dict[str, Any]:
    """stdout holds one JSON object and nothing else."""
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    loaded = json.loads(lines[0])
    assert isinstance(loaded, dict)
    return loaded


def reason_lines(result: click.testing.Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("stripe-reconcile:")]


def test_run_json_is_one_object_agreeing_with_the_run_folder(
    world: SeededWorld, tmp_path: Path
) -> None:
    config = write_config(world.settings, tmp_path)
    result = invoke(world.sandbox.url, config, ["run", "reconcile", "--json"])
    assert result.exit_code == 0, result.stderr
    out = only_json(result)
    assert list(out) == RUN_KEYS
    folder = Path(out["folder"])
    summary = json.loads((folder / "summary.json").read_text())
    assert out["job"] == "reconcile"
    assert out["run_id"] == summary["run_id"] == folder.name
    assert (out["status"], out["exit_code"], out["mode"]) == ("succeeded", 0, "test")
    assert out["counts_by_kind"] == summary["counts_by_kind"]
    assert out["counts_by_kind"]["orphan_customer"] > 0
    assert out["changes"] == summary.get("changes")
    assert (out["message"], out["warnings"]) == (None, [])
    assert reason_lines(result) == []


def test_fail_on_says_why_it_exits_1_in_one_line_and_in_the_json(
    world: SeededWorld, tmp_path: Path
) -> None:
    config = write_config(world.settings, tmp_path)
    human = invoke(world.sandbox.url, config, ["run", "reconcile", "--fail-on", "warning"])
    assert human.exit_code == 1
    run_dir = Path(human.stdout.strip().splitlines()[-1])
    findings = pd.read_csv(run_dir / "findings.csv")
    at_least_warning = int(findings["severity"].isin(["warning", "error"]).sum())
    assert 0 < at_least_warning < len(findings)  # info findings are not counted
    expected = f"--fail-on warning: {at_least_warning} findings at warning or above (exit 1)"
    assert reason_lines(human) == [f"stripe-reconcile: {expected}"]

    as_json = invoke(
        world.sandbox.url, config, ["run", "reconcile", "--fail-on", "error", "--json"]
    )
    assert as_json.exit_code == 1
    out = only_json(as_json)
    errors = int((pd.read_csv(Path(out["folder"]) / "findings.csv")["severity"] == "error").sum())
    assert out["exit_code"] == 1
    assert out["message"] == f"--fail-on error: {errors} findings at error or above (exit 1)"


def test_a_run_that_fails_still_prints_one_json_object(world: SeededWorld, tmp_path: Path) -> None:
    config = write_config(world.settings, tmp_path)
    key = "sk_test_" + "Revoked0000000000jsonx"
    world.sandbox.state.revoked_keys.add(key)
    result = invoke(world.sandbox.url, config, ["run", "reconcile", "--json"], key=key)
    assert result.exit_code == 3
    out = only_json(result)
    assert list(out) == RUN_KEYS
    assert (out["status"], out["exit_code"], out["run_id"], out["folder"]) == (
        "failed",
        3,
        None,
        None,
    )
    assert "sk_test_...sonx" in out["message"]
    assert key not in result.stdout + result.stderr
    (line,) = reason_lines(result)
    assert line.startswith("stripe-reconcile: error: ")


def test_a_run_whose_email_fails_prints_the_completed_run_with_exit_7(
    world: SeededWorld, tmp_path: Path
) -> None:
    config = write_config(
        world.settings,
        tmp_path,
        f'[email]\nto = ["ops@example.com"]\nsmtp_host = "127.0.0.1"\n'
        f'smtp_port = {free_port()}\nsecurity = "none"\ntimeout_seconds = 5\n',
    )
    result = invoke(world.sandbox.url, config, ["run", "reconcile", "--json"])
    assert result.exit_code == 7
    out = only_json(result)
    assert (out["status"], out["exit_code"]) == ("succeeded", 7)
    assert (Path(out["folder"]) / "findings.csv").is_file()
    assert out["run_id"] == Path(out["folder"]).name
    assert "could not connect" in out["message"]
    assert out["counts_by_kind"]["orphan_customer"] > 0


def test_bad_options_are_refused_by_the_model_before_any_request(
    world: SeededWorld, tmp_path: Path
) -> None:
    config = write_config(world.settings, tmp_path)
    world.sandbox.request_log.clear()
    result = invoke(
        world.sandbox.url, config, ["run", "card-expiry", "--preview", "--send", "--json"]
    )
    assert result.exit_code == 2
    out = only_json(result)
    assert out["message"] == (
        "run card-expiry: --preview writes the reminders without sending them and --send "
        "sends them: choose one"
    )
    assert world.sandbox.request_log.entries() == []
    out_of_range = invoke(world.sandbox.url, config, ["run", "card-expiry", "--days", "4000"])
    assert out_of_range.exit_code == 2
    assert "Invalid value for '--days'" in out_of_range.stderr


def test_check_json_names_each_check_and_its_status(world: SeededWorld, tmp_path: Path) -> None:
    config = write_config(world.settings, tmp_path)
    passed = invoke(world.sandbox.url, config, ["check", "--json"])
    assert passed.exit_code == 0, passed.stderr
    out = only_json(passed)
    assert (out["passed"], out["exit_code"]) == (True, 0)
    names = [check["name"] for check in out["checks"]]
    for name in ["key", "rate_limit", "stripe", "user_database", "table", "state_database"]:
        assert name in names
    assert {check["status"] for check in out["checks"]} <= {"ok", "warn"}
    key_check = next(check for check in out["checks"] if check["name"] == "key")
    assert key_check["message"] == "key sk_test_...abcd (test mode)"
    assert TEST_KEY not in passed.stdout

    revoked = "sk_test_" + "Revoked0000000000chck"
    world.sandbox.state.revoked_keys.add(revoked)
    failing = invoke(world.sandbox.url, config, ["check", "--json"], key=revoked)
    assert failing.exit_code == 3
    out = only_json(failing)
    assert (out["passed"], out["exit_code"]) == (False, 3)
    (failed,) = [check for check in out["checks"] if check["status"] == "fail"]
    assert failed["name"] == "stripe"
    assert "refused" in failed["message"]
    assert revoked not in failing.stdout


@pytest.mark.parametrize(
    ("toml", "key", "expected"),
    [
        ("[userdb]\ntabel = 'users'\n", TEST_KEY, "[userdb] tabel: unknown setting"),
        ("", "", "STRIPE_SECRET_KEY is empty"),
    ],
)
def test_check_json_when_the_configuration_cannot_load(
    world: SeededWorld, tmp_path: Path, toml: str, key: str, expected: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    result = invoke(world.sandbox.url, config, ["check", "--json"], key=key)
    assert result.exit_code == 2
    out = only_json(result)
    assert (out["passed"], out["exit_code"]) == (False, 2)
    (check,) = out["checks"]
    assert (check["name"], check["status"]) == ("configuration", "fail")
    assert expected in check["message"]


def test_card_expiry_preview_writes_the_messages_and_sends_nothing(
    world: SeededWorld, smtp: SmtpServer, tmp_path: Path
) -> None:
    config = write_config(
        world.settings,
        tmp_path,
        f'[email]\nfrom = "billing@example.com"\nsmtp_host = "{smtp.host}"\n'
        f'smtp_port = {smtp.port}\nsecurity = "none"\n[card_expiry]\ndays = 45\n',
    )
    result = invoke(world.sandbox.url, config, ["run", "card-expiry", "--preview"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    run_dir = Path(lines[-1])
    assert lines[-2].endswith("add --send to send (preview: reminders-preview.csv)")
    preview = pd.read_csv(run_dir / "reminders-preview.csv", keep_default_na=False)
    reminders = pd.read_csv(run_dir / "reminders.csv")
    assert list(preview.columns) == ["customer_id", "to", "subject", "body"]
    assert len(preview) == reminders["email"].nunique() > 0
    assert set(preview["customer_id"]) <= set(reminders["customer_id"])
    assert all("4" in body or "card" in body.lower() for body in preview["body"])
    assert smtp.received == []
    # Nothing was remembered as sent: a real --send afterwards sends them all.
    sent = invoke(world.sandbox.url, config, ["run", "card-expiry", "--send"])
    assert sent.exit_code == 0, sent.stderr
    assert len(smtp.received) == len(preview)
    assert sorted(r.rcpt_tos[0] for r in smtp.received) == sorted(preview["to"])
    assert sorted(str(r.message["Subject"]) for r in smtp.received) == sorted(preview["subject"])


def test_a_dry_run_over_max_changes_warns_and_a_refused_apply_keeps_its_plan(
    mworld: MaintenanceWorld, tmp_path: Path
) -> None:
    config = write_config(mworld.settings, tmp_path, scope=False)
    dry = invoke(mworld.sandbox.url, config, ["run", "sync-metadata", "--max-changes", "1"])
    assert dry.exit_code == 0, dry.stderr
    assert reason_lines(dry) == [
        "stripe-reconcile: warning: planned 2 changes, --max-changes 1: --apply would refuse "
        "this plan (review plan.csv, then pass --max-changes 2 to allow it)"
    ]
    within = invoke(mworld.sandbox.url, config, ["run", "sync-metadata", "--json"])
    assert only_json(within)["warnings"] == []

    refused = invoke(
        mworld.sandbox.url, config, ["run", "sync-metadata", "--apply", "--max-changes", "1"]
    )
    assert refused.exit_code == 2
    (line,) = reason_lines(refused)
    assert "the plan has 2 changes, more than --max-changes 1: nothing was written" in line
    folder = Path(line.rsplit("the refused plan is in ", 1)[1])
    plan = pd.read_csv(folder / "plan.csv")
    dry_plan = pd.read_csv(Path(dry.stdout.strip().splitlines()[-1]) / "plan.csv")
    assert list(plan["customer_id"]) == list(dry_plan["customer_id"])
    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["status"], summary["planned_changes"], summary["applied"]) == ("refused", 2, 0)
    assert mworld.writes() == []
