"""The maintenance commands as a user meets them: outputs, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.testing import CliRunner

from jobs.commands.cli import cli
from reconcile.stripe_api.customer_ops import search_string
from tests.maintenance.world import LIVE_KEY, TEST_KEY, MaintenanceWorld


def _config(world: MaintenanceWorld, tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        "\n".join(
            [
                "[userdb]",
                f'url = "{world.settings.userdb.url}"',
                "[state]",
                f'url = "{world.settings.state.url}"',
                "[reports]",
                f'out = "{tmp_path / "out"}"',
                "[maintenance]",
                "sync_name = true",
            ]
        )
        + "\n"
    )
    return path


def _invoke(
    world: MaintenanceWorld, tmp_path: Path, args: list[str], key: str = TEST_KEY
) -> click.testing.Result:
    env = {"STRIPE_SECRET_KEY": key, "STRIPE_API_BASE": world.sandbox.url}
    return CliRunner().invoke(
        cli, ["--config", str(_config(world, tmp_path)), *args], env=env, catch_exceptions=False
    )


def _error_line(result: click.testing.Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("stripe-reconcile:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_run_sync_metadata_dry_run_then_apply(mworld: MaintenanceWorld, tmp_path: Path) -> None:
    dry = _invoke(mworld, tmp_path, ["run", "sync-metadata"])
    assert dry.exit_code == 0, dry.stderr
    assert "dry run: 2 change(s) planned, 1 skipped; nothing written" in dry.stdout
    assert Path(dry.stdout.strip().splitlines()[-1], "plan.csv").is_file()
    assert mworld.writes() == []

    applied = _invoke(mworld, tmp_path, ["run", "sync-metadata", "--apply"])
    assert applied.exit_code == 0, applied.stderr
    assert "applied 2, unchanged 0, failed 0 of 2 planned; 1 skipped" in applied.stdout
    assert mworld.customer("cus_sync1").metadata["plan"] == "pro"


def test_max_changes_and_live_mode_refusals_are_one_line_and_exit_2(
    live_world: MaintenanceWorld, tmp_path: Path
) -> None:
    over = _invoke(live_world, tmp_path, ["run", "dedupe", "--apply"], key=LIVE_KEY)
    assert over.exit_code == 2
    assert "--confirm-live" in _error_line(over)
    assert "nothing was written" in _error_line(over)
    assert live_world.writes() == []

    env_confirmed = CliRunner().invoke(
        cli,
        [
            "--config",
            str(_config(live_world, tmp_path)),
            "run",
            "dedupe",
            "--apply",
            "--max-changes",
            "1",
        ],
        env={
            "STRIPE_SECRET_KEY": LIVE_KEY,
            "STRIPE_API_BASE": live_world.sandbox.url,
            "STRIPE_RECONCILE_CONFIRM_LIVE": "1",
        },
    )
    assert env_confirmed.exit_code == 2
    assert "the plan has 2 changes, more than --max-changes 1" in _error_line(env_confirmed)
    assert live_world.writes() == []


def test_customer_find_get_or_create_update_attach_delete(
    mworld: MaintenanceWorld, tmp_path: Path
) -> None:
    found = _invoke(mworld, tmp_path, ["customer", "find", "--email", "u1@example.com", "--json"])
    assert found.exit_code == 0, found.stderr
    assert json.loads(found.stdout)["id"] == "cus_sync1"
    # The exact listing filter misses another case; search finds it, compared exactly.
    upper = _invoke(mworld, tmp_path, ["customer", "find", "--email", "U1@EXAMPLE.COM"])
    assert upper.stdout.startswith("id=cus_sync1\t")
    by_uid = _invoke(mworld, tmp_path, ["customer", "find", "--user-id", '4"\\'])
    assert by_uid.exit_code == 8  # none, and the quote did not break the query
    assert by_uid.stdout == ""
    assert mworld.sandbox.request_log.entries()[-1].status == 200

    args = ["customer", "get-or-create", "--user-id", "42", "--email", "new@example.com", "--json"]
    first = _invoke(mworld, tmp_path, args)
    second = _invoke(mworld, tmp_path, args)
    assert first.exit_code == second.exit_code == 0, first.stderr
    created = json.loads(first.stdout)
    assert json.loads(second.stdout)["id"] == created["id"]
    assert created["user_id"] == "42"
    assert len([c for c in mworld.live_customers() if c.metadata.get("user_id") == "42"]) == 1

    cid = created["id"]
    updated = _invoke(
        mworld, tmp_path, ["customer", "update-metadata", cid, "plan=pro", "user_id=", "--json"]
    )
    assert updated.exit_code == 0, updated.stderr
    assert mworld.customer(cid).metadata == {"plan": "pro"}
    too_long = _invoke(mworld, tmp_path, ["customer", "update-metadata", cid, "k" * 41 + "=v"])
    assert too_long.exit_code == 2
    assert "more than 40" in _error_line(too_long)
    bad = _invoke(mworld, tmp_path, ["customer", "update-metadata", cid, "novalue"])
    assert bad.exit_code == 2

    attached = _invoke(
        mworld, tmp_path, ["customer", "attach-pm", cid, "pm_card_visa", "--default"]
    )
    assert attached.exit_code == 0, attached.stderr
    assert mworld.customer(cid).default_payment_method is not None

    deleted = _invoke(mworld, tmp_path, ["customer", "delete", cid])
    assert deleted.exit_code == 0
    assert deleted.stdout.strip() == f"deleted {cid}"
    assert mworld.customer(cid) is None
    assert "sk_test_" + "MaintenanceKey" not in (first.output + deleted.output)


def test_customer_writes_in_live_mode_need_confirmation(
    live_world: MaintenanceWorld, tmp_path: Path
) -> None:
    refused = _invoke(live_world, tmp_path, ["customer", "delete", "cus_sync1"], key=LIVE_KEY)
    assert refused.exit_code == 2
    assert "--confirm-live" in _error_line(refused)
    assert live_world.customer("cus_sync1") is not None
    confirmed = _invoke(
        live_world, tmp_path, ["customer", "delete", "cus_sync1", "--confirm-live"], key=LIVE_KEY
    )
    assert confirmed.exit_code == 0
    assert live_world.customer("cus_sync1") is None


def test_search_strings_escape_backslash_and_quote() -> None:
    assert search_string('a"b\\c') == '"a\\"b\\\\c"'
    assert search_string("plain") == '"plain"'
