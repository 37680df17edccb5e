"""`run reconcile|card-expiry --incremental` against the sandbox's events: the same findings
as a full listing, the mirror on disk, the listing chosen and why, the reads it costs."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any, cast

import pytest

from reconcile.errors import ConfigError
from reconcile.listing.mirror import mirror_path, read_meta
from sandbox.runner import SandboxServer
from tests.incremental.world import World, build_world, findings_by_kind


def _customer(world: World, email: str, **params: Any) -> str:
    return str(world.client.v1.customers.create(cast(Any, {"email": email, **params})).id)


def _seed(world: World) -> dict[str, str]:
    ids = {
        "ada": _customer(
            world, "ada@example.com", name="Ada", metadata={"user_id": "1", "plan": "pro"}
        ),
        "bob": _customer(
            world, "bob@example.com", name="Bob", metadata={"user_id": "2", "plan": "free"}
        ),
        "cy": _customer(world, "cy@example.com", name="Cy"),
    }
    world.set_users(
        [
            {
                "id": "1",
                "email": "ada@example.com",
                "name": "Ada",
                "stripe_customer_id": ids["ada"],
                "plan": "pro",
            },
            {
                "id": "2",
                "email": "bob@example.com",
                "name": "Bob",
                "stripe_customer_id": ids["bob"],
                "plan": "pro",
            },
            {
                "id": "3",
                "email": "dee@example.com",
                "name": "Dee",
                "stripe_customer_id": None,
                "plan": "pro",
            },
        ]
    )
    return ids


def test_incremental_reconcile_equals_full_and_reads_only_events(world: World) -> None:
    ids = _seed(world)
    world.advance(60)
    first = world.run("reconcile", incremental=True)
    assert first.summary["listing"] == "full"
    assert first.summary["listing_reason"] == "no customer mirror yet"

    world.advance(60)
    world.client.v1.customers.update(ids["bob"], {"metadata": {"plan": "pro"}})
    world.client.v1.customers.update(ids["ada"], {"email": "ada@new.example"})
    world.client.v1.customers.delete(ids["cy"])
    _customer(world, "dee@example.com", metadata={"user_id": "3"})
    world.advance(60)

    incremental = world.run("reconcile", incremental=True)
    full = world.run("reconcile", incremental=False)
    assert incremental.summary["listing"] == "incremental"
    assert full.summary["listing"] == "full"
    assert findings_by_kind(incremental) == findings_by_kind(full)
    assert incremental.summary["events_applied"] == 4
    assert incremental.summary["customers_read_back"] == 0
    by_endpoint = incremental.summary["requests_by_endpoint"]
    assert "GET /v1/customers" not in by_endpoint, by_endpoint


def test_mirror_is_owner_only(world: World) -> None:
    _seed(world)
    world.advance(60)
    world.run("reconcile", incremental=True)
    path = mirror_path(world.settings, "reconcile", "test")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    meta = read_meta(path)
    assert meta is not None
    assert meta.customers == 3


def test_all_cards_refuses_incremental(world: World) -> None:
    with pytest.raises(ConfigError, match="--all-cards"):
        world.run("card-expiry", incremental=True, all_cards=True)


def test_card_expiry_incremental_follows_default_cards_and_the_card_updater(
    world: World,
) -> None:
    ids = _seed(world)
    card = world.client.v1.payment_methods.attach("pm_card_visa", {"customer": ids["ada"]}).id
    world.client.v1.customers.update(
        ids["ada"], {"invoice_settings": {"default_payment_method": card}}
    )
    world.advance(60)
    assert world.run("card-expiry", incremental=True).summary["listing"] == "full"

    world.advance(60)
    # Ada's default card expires this month (the network's updater), Bob gets a new default.
    year, month = world.now().year, world.now().month
    world.sandbox.store.update_card("test", card, exp_month=month, exp_year=year)
    other = world.client.v1.payment_methods.attach("pm_card_amex", {"customer": ids["bob"]}).id
    world.client.v1.customers.update(
        ids["bob"], {"invoice_settings": {"default_payment_method": other}}
    )
    world.sandbox.store.update_card("test", other, exp_month=month, exp_year=year)
    world.advance(60)

    incremental = world.run("card-expiry", incremental=True)
    full = world.run("card-expiry", incremental=False)
    assert incremental.summary["listing"] == "incremental"
    assert findings_by_kind(incremental) == findings_by_kind(full)
    assert {c for c, _ in findings_by_kind(full)["card_expiring"]} == {ids["ada"], ids["bob"]}
    assert incremental.summary["cards_scanned"] == full.summary["cards_scanned"] == 2
    # Every fact came from the events: no customer read back, no customer listed.
    assert incremental.summary["customers_read_back"] == 0
    assert incremental.summary["requests_total"] == incremental.summary["listing_requests"] == 1


def test_changes_just_before_a_full_listing_are_not_read_again(world: World) -> None:
    ids = _seed(world)
    world.advance(2)
    world.client.v1.customers.update(ids["ada"], {"name": "Ada L."})
    world.advance(2)
    # The update is inside the overlap before the listing's bound, and in its pages.
    world.run("reconcile", incremental=True)
    world.advance(60)
    again = world.run("reconcile", incremental=True)
    assert again.summary["listing"] == "incremental"
    assert again.summary["events_applied"] == 0
    assert again.summary["customers_read_back"] == 0


def test_a_late_event_after_a_later_one_is_read_back_not_trusted(world: World) -> None:
    """A to B (late), then B to A: applying the late one last would end on B."""
    ids = _seed(world)
    world.advance(60)
    world.run("reconcile", incremental=True)
    world.advance(10)
    world.sandbox.store.event_faults.delay_next(120)
    world.client.v1.customers.update(ids["bob"], {"metadata": {"plan": "pro"}})
    world.advance(5)
    world.client.v1.customers.update(ids["bob"], {"metadata": {"plan": "free"}})
    world.advance(5)
    world.run("reconcile", incremental=True)  # sees only the second change
    world.advance(300)  # the late one is listed now, behind the watermark
    incremental = world.run("reconcile", incremental=True)
    full = world.run("reconcile", incremental=False)
    assert incremental.summary["customers_read_back"] == 1
    assert findings_by_kind(incremental) == findings_by_kind(full)


def test_a_deleted_customer_stays_deleted_when_its_creation_is_listed_late(
    world: World,
) -> None:
    _seed(world)
    world.advance(60)
    world.run("reconcile", incremental=True)
    world.advance(10)
    world.sandbox.store.event_faults.delay_next(120)
    late = _customer(world, "late@example.com")
    world.advance(5)
    world.client.v1.customers.delete(late)
    world.advance(5)
    world.run("reconcile", incremental=True)
    world.advance(300)
    incremental = world.run("reconcile", incremental=True)
    full = world.run("reconcile", incremental=False)
    assert incremental.summary["customers_scanned"] == full.summary["customers_scanned"] == 3
    assert findings_by_kind(incremental) == findings_by_kind(full)


def test_a_dropped_event_is_caught_by_the_next_full_listing(
    events_sandbox: SandboxServer, tmp_path: Path
) -> None:
    # [incremental] enabled: runs without a flag (scheduled ones) are incremental.
    world = build_world(events_sandbox, tmp_path, enabled=True, full_every_days=7)
    ids = _seed(world)
    world.advance(60)
    assert world.run("reconcile").summary["listing"] == "full"  # no mirror yet
    world.advance(60)
    # Stripe never generates the event of this change: no incremental run can see it.
    world.sandbox.store.event_faults.drop_next(writes=True)
    world.client.v1.customers.update(ids["bob"], {"metadata": {"plan": "pro"}})
    world.advance(60)
    missed = world.run("reconcile")
    assert missed.summary["listing"] == "incremental"
    truth = world.run("reconcile", incremental=False)
    assert findings_by_kind(missed) != findings_by_kind(truth)

    world.advance(7 * 86_400)  # the safety net is due
    caught = world.run("reconcile")
    assert caught.summary["listing"] == "full"
    assert "7 days" in caught.summary["listing_reason"]
    assert findings_by_kind(caught) == findings_by_kind(truth)
    after = world.run("reconcile")  # and the mirror it left is right
    assert after.summary["listing"] == "incremental"
    assert findings_by_kind(after) == findings_by_kind(truth)


def test_a_failed_save_leaves_the_old_mirror_whole(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet

    ids = _seed(world)
    world.advance(60)
    world.run("reconcile", incremental=True)
    path = mirror_path(world.settings, "reconcile", "test")
    before = path.read_bytes()
    world.client.v1.customers.update(ids["ada"], {"name": "Changed"})
    world.advance(60)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pyarrow.parquet, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        world.run("reconcile", incremental=True)
    assert path.read_bytes() == before
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".")]


def test_missing_customers_are_looked_up_once(world: World) -> None:
    ids = _seed(world)
    world.client.v1.customers.delete(ids["cy"])
    users = [
        {"id": "1", "email": "ada@example.com", "name": "Ada", "stripe_customer_id": ids["ada"]},
        {"id": "4", "email": "cy@example.com", "name": "Cy", "stripe_customer_id": ids["cy"]},
        {"id": "5", "email": "eve@example.com", "name": "Eve", "stripe_customer_id": "cus_nope"},
    ]
    world.set_users([{**user, "plan": "pro"} for user in users])
    world.advance(60)
    first = world.run("reconcile", incremental=True)
    assert first.summary["missing_customer_lookups"] == 2
    world.advance(60)
    incremental = world.run("reconcile", incremental=True)
    full = world.run("reconcile", incremental=False)
    # Deleted and absent stay so: the incremental run asks Stripe again about neither.
    assert incremental.summary["missing_customer_lookups"] == 0
    assert full.summary["missing_customer_lookups"] == 2
    assert findings_by_kind(incremental) == findings_by_kind(full)
    assert incremental.summary["requests_total"] == 1  # one page of events

    # A linked customer deleted since: its event says so, no lookup needed either.
    world.client.v1.customers.delete(ids["ada"])
    world.advance(60)
    incremental = world.run("reconcile", incremental=True)
    full = world.run("reconcile", incremental=False)
    assert incremental.summary["missing_customer_lookups"] == 0
    assert full.summary["missing_customer_lookups"] == 3
    assert findings_by_kind(incremental) == findings_by_kind(full)


def test_cli_flags_choose_the_listing(world: World, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from jobs.commands.cli import cli
    from tests.incremental.world import TEST_KEY

    _seed(world)
    # These runs are bounded by the real clock's second: customers created in the second
    # a run starts are not its listing's (nor their events its reflected ones), and a few
    # runs fit in one second. Start them in the next.
    time.sleep(1.0 - time.time() % 1.0 + 0.01)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[userdb]\nurl = "{world.users_url}"\n'
        f'[state]\nurl = "{world.settings.state.url}"\n'
        f'[reports]\nout = "{tmp_path / "out"}"\n'
    )
    env = {"STRIPE_SECRET_KEY": TEST_KEY, "STRIPE_API_BASE": world.sandbox.url}

    def invoke(*args: str) -> dict[str, object]:
        result = CliRunner().invoke(cli, ["--config", str(config), "run", *args], env=env)
        assert result.exit_code in (0, 1), result.output
        run_dir = Path(result.output.strip().splitlines()[-1])
        summary: dict[str, object] = json.loads((run_dir / "summary.json").read_text())
        return summary

    assert invoke("reconcile", "--incremental")["listing"] == "full"  # no mirror yet
    assert invoke("reconcile", "--incremental")["listing"] == "incremental"
    assert invoke("reconcile", "--full")["listing"] == "full"
    assert invoke("reconcile")["listing"] == "full"  # [incremental] enabled is false
    assert invoke("card-expiry", "--incremental")["listing"] == "full"
    summary = invoke("card-expiry", "--incremental")
    assert summary["listing"] == "incremental"
    assert summary["events_applied"] == 0
    refused = CliRunner().invoke(
        cli,
        ["--config", str(config), "run", "card-expiry", "--incremental", "--all-cards"],
        env=env,
    )
    assert refused.exit_code == 2
    assert "--all-cards" in refused.output
