"""Deletes re-check, from fresh reads just before the DELETE, everything the README promises.

dedupe deletes a duplicate only if it still exists, has a zero balance, no subscription
that is not over (any status but canceled / incomplete_expired), no payment method of
any type and no user linked to it now. gdpr-delete deletes a customer only if its user
is still soft-deleted and still holds it, no user who is not deleted links to it, and it
has no subscription that is not over; it clears the link only of a user still
soft-deleted. The world changes "during the run" through `after_action` (after the first
of several deletes, before the next) and the runs go through the sandbox's HTTP API and
real SQLite and PostgreSQL user databases.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from reconcile.state.audit import AuditEntry, AuditLog, Outcome
from sandbox.runner import SandboxServer
from tests.maintenance.meanwhile import (
    BANK_METHODS,
    NON_TERMINAL_STATUSES,
    TERMINAL_STATUSES,
    add_bank_method,
    add_idle_duplicates,
    add_subscription,
    on_action,
    set_balance,
    set_user,
)
from tests.maintenance.world import MaintenanceWorld, build, facts


@pytest.fixture
def dbworld(sandbox_server: SandboxServer, tmp_path: Path, database_url: str) -> MaintenanceWorld:
    """The maintenance world with its users table on SQLite, then on PostgreSQL."""
    return build(sandbox_server, tmp_path, database_url)


def _audit(world: MaintenanceWorld, job: str) -> dict[str, AuditEntry]:
    engine = sa.create_engine(world.settings.state.url)
    try:
        return {entry.customer_id: entry for entry in AuditLog(engine).entries(job=job)}
    finally:
        engine.dispose()


def _skip_reason(entry: AuditEntry) -> str:
    """The reason a re-check kept a planned write from being sent (the audit's `error`)."""
    assert entry.outcome == Outcome.SKIPPED, entry
    assert entry.stripe_request_id == ""  # nothing was sent for it
    assert "\n" not in entry.error
    return entry.error


def _plan(world: MaintenanceWorld, job: str) -> pd.DataFrame:
    outcome = world.run(job)
    assert outcome.exit_code == 0
    plan: pd.DataFrame = outcome.result.extra_tables["plan"]
    return plan


# --- gdpr-delete ----------------------------------------------------------------------------


def test_gdpr_delete_keeps_the_customer_and_link_of_a_user_restored_during_the_run(
    dbworld: MaintenanceWorld,
) -> None:
    world = dbworld
    # cus_gone8 is deleted first; meanwhile the app restores user 9 (soft-delete undone).
    restore_9 = on_action(1, lambda: set_user(world, 9, deleted_at=None))

    outcome = world.run("gdpr-delete", apply=True, after_action=restore_9)

    assert outcome.exit_code == 0, facts(outcome)
    assert world.customer("cus_gone8") is None
    assert world.customer("cus_gone9") is not None, "a restored user's customer was deleted"
    assert world.links()[8] is None
    assert world.links()[9] == "cus_gone9", "a restored user's link was cleared"
    reason = _skip_reason(_audit(world, "gdpr-delete")["cus_gone9"])
    assert "user 9 is no longer soft-deleted" in reason


def test_gdpr_delete_keeps_a_customer_an_active_user_linked_to_during_the_run(
    dbworld: MaintenanceWorld,
) -> None:
    world = dbworld
    # User 6 (not deleted) is linked to cus_gone9 by the app while the run goes on.
    link_6 = on_action(1, lambda: set_user(world, 6, stripe_customer_id="cus_gone9"))

    outcome = world.run("gdpr-delete", apply=True, after_action=link_6)

    assert outcome.exit_code == 0, facts(outcome)
    assert world.customer("cus_gone9") is not None
    links = world.links()
    assert (links[6], links[9]) == ("cus_gone9", "cus_gone9")
    reason = _skip_reason(_audit(world, "gdpr-delete")["cus_gone9"])
    assert "not deleted link to this customer (6)" in reason


def test_gdpr_delete_keeps_the_link_of_a_user_relinked_during_the_run(
    dbworld: MaintenanceWorld,
) -> None:
    world = dbworld
    relink_9 = on_action(1, lambda: set_user(world, 9, stripe_customer_id="cus_sync1"))

    outcome = world.run("gdpr-delete", apply=True, after_action=relink_9)

    assert outcome.exit_code == 0, facts(outcome)
    assert world.customer("cus_gone9") is not None
    assert world.links()[9] == "cus_sync1"
    reason = _skip_reason(_audit(world, "gdpr-delete")["cus_gone9"])
    assert "user 9 no longer links to this customer" in reason


@pytest.mark.parametrize("status", NON_TERMINAL_STATUSES)
def test_gdpr_delete_plans_a_skip_for_a_customer_whose_subscription_is_not_over(
    mworld: MaintenanceWorld, status: str
) -> None:
    subscription = mworld.sandbox.store.add_subscription("test", "cus_gone9", status)

    dry = mworld.run("gdpr-delete")
    rows = dry.result.extra_tables["plan"].set_index("customer_id")
    assert rows.loc["cus_gone8", "action"] == "delete_customer"
    # The dry run already says what --apply will do: no surprise delete in plan.csv.
    assert rows.loc["cus_gone9", "action"] == "skip"
    assert f"1 subscription(s) not over ({status})" in rows.loc["cus_gone9", "reason"]

    outcome = mworld.run("gdpr-delete", apply=True)

    assert outcome.exit_code == 0, facts(outcome)
    assert mworld.customer("cus_gone8") is None
    assert mworld.customer("cus_gone9") is not None, f"a {status} subscription was canceled"
    assert subscription.status == status
    assert mworld.links()[9] == "cus_gone9"
    assert "cus_gone9" not in _audit(mworld, "gdpr-delete")


@pytest.mark.parametrize("status", NON_TERMINAL_STATUSES)
def test_gdpr_delete_skips_a_customer_whose_subscription_started_after_the_plan(
    mworld: MaintenanceWorld, status: str
) -> None:
    holder: list[Any] = []
    subscribe_9 = on_action(
        1, lambda: holder.append(mworld.sandbox.store.add_subscription("test", "cus_gone9", status))
    )

    outcome = mworld.run("gdpr-delete", apply=True, after_action=subscribe_9)
    (subscription,) = holder

    assert outcome.exit_code == 0, facts(outcome)
    assert mworld.customer("cus_gone8") is None
    assert mworld.customer("cus_gone9") is not None, f"a {status} subscription was canceled"
    assert subscription.status == status
    assert mworld.links()[9] == "cus_gone9"
    reason = _skip_reason(_audit(mworld, "gdpr-delete")["cus_gone9"])
    assert f"1 subscription(s) ({status}) not canceled" in reason
    assert "would cancel them at once" in reason


@pytest.mark.parametrize("status", TERMINAL_STATUSES)
def test_gdpr_delete_deletes_a_customer_whose_subscriptions_are_over(
    mworld: MaintenanceWorld, status: str
) -> None:
    mworld.sandbox.store.add_subscription("test", "cus_gone9", status)

    outcome = mworld.run("gdpr-delete", apply=True)

    assert outcome.exit_code == 0, facts(outcome)
    assert mworld.customer("cus_gone9") is None
    assert mworld.links()[9] is None
    assert _audit(mworld, "gdpr-delete")["cus_gone9"].outcome == Outcome.APPLIED


def test_gdpr_delete_of_a_customer_deleted_meanwhile_clears_the_link_and_goes_on(
    dbworld: MaintenanceWorld,
) -> None:
    world = dbworld
    gone = on_action(1, lambda: world.sandbox.store.mark_deleted("test", ["cus_gone9"]))

    outcome = world.run("gdpr-delete", apply=True, after_action=gone)

    assert outcome.exit_code == 0, facts(outcome)
    assert world.links()[9] is None
    entry = _audit(world, "gdpr-delete")["cus_gone9"]
    assert entry.outcome == Outcome.APPLIED
    assert json.loads(entry.after) == {"customer_deleted": False, "link_cleared": True}


# --- dedupe ---------------------------------------------------------------------------------

# With two more idle duplicates of user 7 the plan deletes cus_dupB, cus_dupD, cus_dupE in
# that order and tags cus_dupC: a change after the first delete meets cus_dupD's re-check.
MORE_DUPLICATES = ("cus_dupD", "cus_dupE")


def _dedupe_with(world: MaintenanceWorld, change: Callable[[], None]) -> AuditEntry:
    add_idle_duplicates(world, *MORE_DUPLICATES)
    plan = _plan(world, "dedupe")
    deletes = plan[plan["action"] == "delete_customer"]["customer_id"].tolist()
    assert deletes == ["cus_dupB", "cus_dupD", "cus_dupE"]

    outcome = world.run("dedupe", apply=True, after_action=on_action(1, change))

    assert outcome.exit_code == 0, facts(outcome)
    assert world.customer("cus_dupB") is None
    assert world.customer("cus_dupE") is None
    return _audit(world, "dedupe")["cus_dupD"]


def _kept(world: MaintenanceWorld, entry: AuditEntry) -> str:
    assert world.customer("cus_dupD") is not None, "the duplicate was deleted"
    return _skip_reason(entry)


def test_dedupe_keeps_a_duplicate_a_user_was_linked_to_during_the_run(
    dbworld: MaintenanceWorld,
) -> None:
    world = dbworld
    entry = _dedupe_with(world, lambda: set_user(world, 6, stripe_customer_id="cus_dupD"))
    assert "linked in the user DB now (user 6)" in _kept(world, entry)
    assert world.links()[6] == "cus_dupD"


@pytest.mark.parametrize("status", NON_TERMINAL_STATUSES)
def test_dedupe_keeps_a_duplicate_that_got_a_subscription_not_over(
    mworld: MaintenanceWorld, status: str
) -> None:
    entry = _dedupe_with(mworld, lambda: add_subscription(mworld, "cus_dupD", status))
    assert f"1 subscription(s) ({status}) not canceled" in _kept(mworld, entry)


@pytest.mark.parametrize("status", TERMINAL_STATUSES)
def test_dedupe_deletes_a_duplicate_whose_subscriptions_are_over(
    mworld: MaintenanceWorld, status: str
) -> None:
    entry = _dedupe_with(mworld, lambda: add_subscription(mworld, "cus_dupD", status))
    assert entry.outcome == Outcome.APPLIED
    assert mworld.customer("cus_dupD") is None


@pytest.mark.parametrize("kind", BANK_METHODS)
def test_dedupe_keeps_a_duplicate_that_got_a_bank_payment_method(
    mworld: MaintenanceWorld, kind: str
) -> None:
    entry = _dedupe_with(mworld, lambda: add_bank_method(mworld, "cus_dupD", kind))
    assert f"1 payment method(s) ({kind})" in _kept(mworld, entry)


def test_dedupe_keeps_a_duplicate_whose_balance_is_not_zero(mworld: MaintenanceWorld) -> None:
    entry = _dedupe_with(mworld, lambda: set_balance(mworld, "cus_dupD", -500))
    assert "balance -500" in _kept(mworld, entry)


def test_dedupe_a_duplicate_deleted_meanwhile_is_unchanged_and_the_run_goes_on(
    mworld: MaintenanceWorld,
) -> None:
    entry = _dedupe_with(mworld, lambda: mworld.sandbox.store.mark_deleted("test", ["cus_dupD"]))
    assert entry.outcome == Outcome.UNCHANGED
    assert json.loads(entry.after)["already_deleted"] is True
    assert entry.error == "customer cus_dupD is already deleted"


@pytest.mark.parametrize("status", [s for s in NON_TERMINAL_STATUSES if s != "active"])
def test_dedupe_plans_a_duplicate_with_a_subscription_not_over_as_kept(
    mworld: MaintenanceWorld, status: str
) -> None:
    mworld.sandbox.store.add_subscription("test", "cus_dupB", status)
    plan = _plan(mworld, "dedupe").set_index("customer_id")
    assert plan.loc["cus_dupB", "action"] == "tag_duplicate"
    assert "1 subscription(s)" in str(plan.loc["cus_dupB", "reason"])


@pytest.mark.parametrize("kind", BANK_METHODS)
def test_dedupe_plans_a_duplicate_with_a_bank_payment_method_as_kept(
    mworld: MaintenanceWorld, kind: str
) -> None:
    add_bank_method(mworld, "cus_dupB", kind)
    plan = _plan(mworld, "dedupe").set_index("customer_id")
    assert plan.loc["cus_dupB", "action"] == "tag_duplicate"
    assert "1 payment method(s)" in str(plan.loc["cus_dupB", "reason"])


def test_dedupe_does_not_tag_a_duplicate_deleted_meanwhile(mworld: MaintenanceWorld) -> None:
    # The plan deletes cus_dupB, then tags cus_dupC; cus_dupC is deleted in between.
    gone = on_action(1, lambda: mworld.sandbox.store.mark_deleted("test", ["cus_dupC"]))

    outcome = mworld.run("dedupe", apply=True, after_action=gone)

    assert outcome.exit_code == 0, facts(outcome)
    entry = _audit(mworld, "dedupe")["cus_dupC"]
    assert entry.outcome == Outcome.UNCHANGED
    assert entry.error == "customer cus_dupC is already deleted"
    assert not [w for w in mworld.writes() if w.path == "/v1/customers/cus_dupC"]


def test_dedupe_keeps_a_duplicate_of_tag_a_person_set_meanwhile(mworld: MaintenanceWorld) -> None:
    def person_tags_c() -> None:
        store = mworld.sandbox.store
        with store.lock:
            record = store.mode("test").customers["cus_dupC"]
            record.metadata["duplicate_of"] = "cus_sync1"

    outcome = mworld.run("dedupe", apply=True, after_action=on_action(1, person_tags_c))

    assert outcome.exit_code == 0, facts(outcome)
    assert mworld.customer("cus_dupC").metadata["duplicate_of"] == "cus_sync1"
    reason = _skip_reason(_audit(mworld, "dedupe")["cus_dupC"])
    assert "metadata.duplicate_of changed" in reason
