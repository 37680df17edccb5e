"""link-users on SQLite and PostgreSQL, a create interrupted before its link, and one
failed action that the run records and goes past (exit 6)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from reconcile.errors import EXIT_ACTIONS_FAILED
from reconcile.userdb import UserDB
from sandbox.runner import SandboxServer
from tests.maintenance.world import MaintenanceWorld, build, facts


class Killed(Exception):
    pass


def test_link_users_on_both_engines_never_overwrites_a_link(
    sandbox_server: SandboxServer, tmp_path: Path, database_url: str
) -> None:
    world = build(sandbox_server, tmp_path, database_url)
    userdb = UserDB(world.settings.userdb)
    try:
        # Someone links user 4 elsewhere between our snapshot and our write.
        assert userdb.link_customer("4", "cus_someone_else") is True
        assert userdb.link_customer("4", "cus_un4") is False
        assert userdb.link_customer("999", "cus_un4") is False  # no such user
    finally:
        userdb.close()
    outcome = world.run("link-users", apply=True, create_missing=True)
    assert outcome.exit_code == 0
    links = world.links()
    assert links[4] == "cus_someone_else"
    assert links[5] == "cus_un5"
    assert links[6] is not None
    assert links[6].startswith("cus_")
    again = world.run("link-users", apply=True, create_missing=True)
    assert facts(again)["planned_changes"] == 0


def test_clear_customer_only_clears_the_id_it_names(
    sandbox_server: SandboxServer, tmp_path: Path, database_url: str
) -> None:
    world = build(sandbox_server, tmp_path, database_url)
    userdb = UserDB(world.settings.userdb)
    try:
        assert userdb.clear_customer("8", "cus_other") is False
        assert userdb.clear_customer("8", "cus_gone8") is True
        assert userdb.clear_customer("8", "cus_gone8") is False
    finally:
        userdb.close()
    assert world.links()[8] is None


def test_a_create_interrupted_before_its_link_is_linked_not_created_again(
    mworld: MaintenanceWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = UserDB.link_customer

    def dies_on_user_6(self: UserDB, user_id: str, customer_id: str) -> bool:
        if user_id == "6":
            raise Killed
        return original(self, user_id, customer_id)

    monkeypatch.setattr(UserDB, "link_customer", dies_on_user_6)
    with pytest.raises(Killed):
        mworld.run("link-users", apply=True, create_missing=True)
    monkeypatch.setattr(UserDB, "link_customer", original)
    created = [c for c in mworld.live_customers() if c.metadata.get("user_id") == "6"]
    assert len(created) == 1
    assert mworld.links()[6] is None

    outcome = mworld.run("link-users", apply=True, create_missing=True)
    assert outcome.exit_code == 0
    plan = pd.read_csv(outcome.run_dir / "plan.csv", dtype=str, keep_default_na=False)
    assert "create_customer_and_link" not in set(plan["action"])
    assert mworld.links()[6] == created[0].id
    assert len([c for c in mworld.live_customers() if c.metadata.get("user_id") == "6"]) == 1
    assert [r.path for r in mworld.writes()] == ["/v1/customers"]


def test_one_failed_action_is_audited_and_the_run_goes_on(mworld: MaintenanceWorld) -> None:
    mworld.sandbox.faults.fail_next("POST", "/v1/customers/cus_sync1", 1, status=400)
    outcome = mworld.run("sync-metadata", apply=True)
    assert outcome.exit_code == EXIT_ACTIONS_FAILED
    assert facts(outcome)["failed"] == 1
    assert facts(outcome)["applied"] == 1
    assert mworld.customer("cus_sync2").metadata == {"user_id": "2"}
    audit = pd.read_csv(outcome.run_dir / "audit.csv", dtype=str, keep_default_na=False)
    failed = audit[audit["outcome"] == "failed"]
    assert list(failed["customer_id"]) == ["cus_sync1"]
    assert failed["error"].iloc[0]
    assert failed["stripe_request_id"].iloc[0].startswith("req_")
    assert audit[audit["outcome"] == "applied"]["stripe_request_id"].str.startswith("req_").all()

    retried = mworld.run("sync-metadata", apply=True)
    assert retried.exit_code == 0
    assert facts(retried)["applied"] == 1
    assert mworld.customer("cus_sync1").metadata["plan"] == "pro"


def test_audit_rows_of_gdpr_delete_hold_ids_only(mworld: MaintenanceWorld) -> None:
    outcome = mworld.run("gdpr-delete", apply=True)
    text = (outcome.run_dir / "audit.csv").read_text() + (
        outcome.run_dir / "findings.csv"
    ).read_text()
    assert "@example.com" not in text
    from reconcile.state.audit import AuditLog
    from reconcile.state.store import StateStore

    store = StateStore(mworld.settings.state.url)
    try:
        stored = AuditLog(store.engine).entries(job="gdpr-delete")
    finally:
        store.close()
    assert {e.customer_id for e in stored} == {"cus_gone8", "cus_gone9"}
    assert all("@" not in e.before + e.after for e in stored)
