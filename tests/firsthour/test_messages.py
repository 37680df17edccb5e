"""Messages of the first hour: "not found" has its own exit code, examples survive the
redaction, failed actions point at the file that records them, suggested actions work."""

from __future__ import annotations

from pathlib import Path

import click
import pandas as pd
from click.testing import CliRunner

from jobs.base import JobResult
from jobs.commands.cli import cli
from jobs.runner import _actions_record
from reconcile.errors import EXIT_CONFIG, EXIT_NOT_FOUND
from reconcile.logs import redact_text
from reconcile.settings import Settings
from tests.seeded import TEST_KEY, SeededWorld


def _invoke(world: SeededWorld, tmp_path: Path, args: list[str]) -> click.testing.Result:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[userdb]\nurl = "{world.users_url}"\n[state]\nurl = "sqlite:///state.db"\n'
        '[reports]\nout = "out"\n'
    )
    return CliRunner().invoke(
        cli,
        ["--config", str(config), *args],
        env={"STRIPE_SECRET_KEY": TEST_KEY, "STRIPE_API_BASE": world.sandbox.url},
    )


def test_customer_find_without_a_match_exits_8_with_one_line(
    world: SeededWorld, tmp_path: Path
) -> None:
    result = _invoke(world, tmp_path, ["customer", "find", "--email", "nobody@nowhere.test"])
    assert result.exit_code == EXIT_NOT_FOUND == 8
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["stripe-reconcile: no customer matches this --email"]

    by_id = _invoke(world, tmp_path, ["customer", "find", "--user-id", "no-such-user"])
    assert by_id.exit_code == 8
    assert by_id.stderr.splitlines() == [
        "stripe-reconcile: no customer matches this --user-id (metadata user_id)"
    ]

    found = world.account.customers[0]
    hit = _invoke(world, tmp_path, ["customer", "find", "--email", str(found["email"])])
    assert hit.exit_code == 0, hit.stderr
    assert f"id={found['id']}\t" in hit.stdout


def test_a_write_to_a_customer_that_does_not_exist_exits_8(
    world: SeededWorld, tmp_path: Path
) -> None:
    result = _invoke(
        world, tmp_path, ["customer", "update-metadata", "cus_doesNotExist", "plan=pro"]
    )
    assert result.exit_code == EXIT_NOT_FOUND, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("stripe-reconcile")]
    assert len(lines) == 1
    assert "cus_doesNotExist" in lines[0]


def test_the_email_options_example_address_survives_the_redaction(
    world: SeededWorld, tmp_path: Path
) -> None:
    result = _invoke(world, tmp_path, ["run", "reconcile", "--email"])
    assert result.exit_code == EXIT_CONFIG
    assert '[email] to = ["you@example.com"]' in result.stderr
    # Every other address is still redacted, example.com ones included.
    assert redact_text("mail ada@example.com or you@example.com.uk") == ("mail [email] or [email]")


def test_failed_actions_point_at_the_file_that_records_them(tmp_path: Path) -> None:
    frame = pd.DataFrame()
    writes = JobResult(findings=frame, extra_tables={"plan": frame, "audit": frame})
    reminders = JobResult(findings=frame, extra_tables={"reminders": frame})
    settings = Settings()
    assert _actions_record(writes, tmp_path, settings) == tmp_path / "audit.csv"
    parquet_only = settings.model_copy(
        update={"reports": settings.reports.model_copy(update={"formats": ["parquet"]})}
    )
    assert _actions_record(writes, tmp_path, parquet_only) == tmp_path / "audit.parquet"
    # card-expiry's failed reminders are counted in the summary, not in a table.
    assert _actions_record(reminders, tmp_path, settings) == tmp_path / "summary.json"
