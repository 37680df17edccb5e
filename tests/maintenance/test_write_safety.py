"""Writes that are never lost, never repeated, never a surprise (issue 12), through the
sandbox, the jobs and the CLI:

- a key names one intended write: a later run's (or invocation's) repeat of an earlier
  change is written again, never answered with the old replay;
- a replayed answer is read back before it counts; a 5xx is never resent under its key;
  a DELETE whose answer was lost is confirmed by a retrieve;
- every write re-reads its target first (compare-and-set), so a resumed run never
  writes what its stored listing says without looking;
- a lost lease stops the run before its next write; no audit row, no write.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from jobs.base import LeaseLostError
from jobs.commands.cli import cli
from jobs.runner import build_gateway
from reconcile.listing.checkpoints import RunInterrupted
from reconcile.state.audit import AuditEntry, AuditLog
from reconcile.state.store import RunStatus, StateStore, utc_now
from reconcile.stripe_api.gateway import StripeGateway, WriteNotConfirmedError
from sandbox.requestlog import RequestRecord
from sandbox.runner import SandboxServer
from tests.maintenance.meanwhile import set_user
from tests.maintenance.world import TEST_KEY, MaintenanceWorld, build, facts


class Killed(Exception):
    """Stands for the process dying between two actions."""


def _die_after(count: int) -> Callable[[int], None]:
    def after_action(attempted: int) -> None:
        if attempted == count:
            raise Killed

    return after_action


def _fast(world: MaintenanceWorld) -> MaintenanceWorld:
    # The backoff before a new try: short, so tests of retries do not sleep for seconds.
    stripe = world.settings.stripe.model_copy(update={"retry_initial_delay": 0.01})
    world.settings = world.settings.model_copy(update={"stripe": stripe})
    return world


def _other_party(world: MaintenanceWorld) -> StripeGateway:
    """Someone else writing to the account (the dashboard, the production app)."""
    return build_gateway(world.settings)


def _ours(world: MaintenanceWorld, path: str | None = None) -> list[RequestRecord]:
    """The tool's writes (its keys), optionally to one path."""
    return [
        r
        for r in world.writes()
        if (r.idempotency_key or "").startswith("stripe-reconcile:")
        and (path is None or r.path == path)
    ]


def _audit(world: MaintenanceWorld, job: str) -> list[AuditEntry]:
    engine = sa.create_engine(world.settings.state.url)
    try:
        return AuditLog(engine).entries(job=job)
    finally:
        engine.dispose()


def _config(world: MaintenanceWorld, tmp_path: Path, state_url: str | None = None) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        "[userdb]\n"
        f'url = "{world.settings.userdb.url}"\n'
        "[state]\n"
        f'url = "{state_url or world.settings.state.url}"\n'
        "[reports]\n"
        f'out = "{tmp_path / "out"}"\n'
    )
    return path


def _invoke(
    world: MaintenanceWorld, tmp_path: Path, args: list[str], state_url: str | None = None
) -> click.testing.Result:
    env = {"STRIPE_SECRET_KEY": TEST_KEY, "STRIPE_API_BASE": world.sandbox.url}
    config = _config(world, tmp_path, state_url)
    return CliRunner().invoke(
        cli, ["--config", str(config), *args], env=env, catch_exceptions=False
    )


# --- 1. a key names one intended write -------------------------------------------------


def test_update_metadata_pro_free_pro_are_three_writes(
    mworld: MaintenanceWorld, tmp_path: Path
) -> None:
    for value in ("pro", "free", "pro"):
        result = _invoke(
            mworld, tmp_path, ["customer", "update-metadata", "cus_sync1", f"plan={value}"]
        )
        assert result.exit_code == 0, result.stderr
    assert mworld.customer("cus_sync1").metadata["plan"] == "pro"
    writes = _ours(mworld, "/v1/customers/cus_sync1")
    assert len({w.idempotency_key for w in writes}) == 3
    assert [(w.status, w.replayed) for w in writes] == [(200, False)] * 3
    audit = _audit(mworld, "customer")
    assert [(e.action, e.outcome) for e in audit] == [("update_metadata", "applied")] * 3


def test_sync_metadata_pro_free_pro_over_three_runs_writes_each_time(
    mworld: MaintenanceWorld,
) -> None:
    for plan in ("pro", "free", "pro"):
        set_user(mworld, 1, plan=plan)
        outcome = mworld.run("sync-metadata", apply=True)
        assert outcome.exit_code == 0
        assert mworld.customer("cus_sync1").metadata["plan"] == plan
    writes = _ours(mworld, "/v1/customers/cus_sync1")
    assert len(writes) == 3
    assert not any(w.replayed for w in writes)


def test_get_or_create_after_the_customer_was_deleted_creates_a_new_one(
    mworld: MaintenanceWorld, tmp_path: Path
) -> None:
    args = ["customer", "get-or-create", "--user-id", "42", "--email", "n42@example.com"]
    first = _invoke(mworld, tmp_path, [*args, "--json"])
    assert first.exit_code == 0, first.stderr
    created = json.loads(first.stdout)["id"]
    deleted = _invoke(mworld, tmp_path, ["customer", "delete", created])
    assert deleted.stdout.strip() == f"deleted {created}"

    again = _invoke(mworld, tmp_path, [*args, "--json"])
    assert again.exit_code == 0, again.stderr
    recreated = json.loads(again.stdout)["id"]
    assert recreated != created
    assert mworld.customer(recreated) is not None
    assert [c.id for c in mworld.live_customers() if c.metadata.get("user_id") == "42"] == [
        recreated
    ]


def test_link_users_create_missing_after_create_and_delete_links_a_live_customer(
    sandbox_server: SandboxServer, tmp_path: Path, database_url: str
) -> None:
    mworld = build(sandbox_server, tmp_path, database_url)
    mworld.run("link-users", apply=True, create_missing=True)
    first = mworld.links()[6]
    assert first is not None
    # The customer is deleted in Stripe and the link cleared: the user has none again.
    mworld.sandbox.store.mark_deleted("test", [first])
    set_user(mworld, 6, stripe_customer_id=None)

    outcome = mworld.run("link-users", apply=True, create_missing=True)
    assert outcome.exit_code == 0
    second = mworld.links()[6]
    assert second is not None
    assert second != first
    assert mworld.customer(second) is not None


# --- 2-4. answers that cannot be taken at their word -------------------------------------


def test_a_replayed_answer_that_the_customer_does_not_show_fails(
    mworld: MaintenanceWorld,
) -> None:
    ours, other = _other_party(mworld), _other_party(mworld)
    key = "stripe-reconcile:test:update:cus_sync1:intent-1:abc"
    ours.update_customer("cus_sync1", {"metadata": {"plan": "pro"}}, idempotency_key=key)
    other.update_customer("cus_sync1", {"metadata": {"plan": "free"}}, idempotency_key="other-1")
    with pytest.raises(WriteNotConfirmedError) as caught:
        ours.update_customer("cus_sync1", {"metadata": {"plan": "pro"}}, idempotency_key=key)
    assert caught.value.message.startswith("Stripe replayed an earlier answer for this key")
    assert "customer cus_sync1 does not hold metadata.plan" in caught.value.message
    assert mworld.customer("cus_sync1").metadata["plan"] == "free"
    # A replay whose object does show the write is the write, done once.
    other.update_customer("cus_sync1", {"metadata": {"plan": "pro"}}, idempotency_key="other-2")
    shown = ours.update_customer("cus_sync1", {"metadata": {"plan": "pro"}}, idempotency_key=key)
    assert shown["metadata"]["plan"] == "pro"
    assert mworld.writes()[-1].replayed


def test_a_500_stored_after_the_write_applied_is_read_back_not_resent(
    mworld: MaintenanceWorld,
) -> None:
    mworld.sandbox.faults.fail_next(
        "POST", "/v1/customers/cus_sync1", 1, status=500, after_apply=True
    )
    outcome = _fast(mworld).run("sync-metadata", apply=True)
    assert outcome.exit_code == 0
    assert facts(outcome)["applied"] == 2
    writes = _ours(mworld, "/v1/customers/cus_sync1")
    assert [(w.status, w.applied) for w in writes] == [(500, True)]
    assert mworld.customer("cus_sync1").metadata["plan"] == "pro"


def test_a_500_before_the_write_is_tried_again_under_a_new_key(mworld: MaintenanceWorld) -> None:
    mworld.sandbox.faults.fail_next("POST", "/v1/customers/cus_sync1", 1, status=500)
    outcome = _fast(mworld).run("sync-metadata", apply=True)
    assert facts(outcome)["applied"] == 2
    writes = _ours(mworld, "/v1/customers/cus_sync1")
    assert [w.status for w in writes] == [500, 200]
    first, second = (str(w.idempotency_key) for w in writes)
    assert second == first + ":r1"
    assert mworld.customer("cus_sync1").metadata["plan"] == "pro"


def test_a_500_on_every_try_fails_that_action_alone(mworld: MaintenanceWorld) -> None:
    world = _fast(mworld)
    tries = world.settings.stripe.max_retries + 1
    world.sandbox.faults.fail_next("POST", "/v1/customers/cus_sync1", tries, status=500)
    outcome = world.run("sync-metadata", apply=True)
    assert outcome.exit_code == 6
    assert (facts(outcome)["applied"], facts(outcome)["failed"]) == (1, 1)
    keys = [str(w.idempotency_key) for w in _ours(world, "/v1/customers/cus_sync1")]
    assert keys == [keys[0]] + [f"{keys[0]}:r{n}" for n in range(1, tries)]
    failed = next(e for e in _audit(world, "sync-metadata") if e.customer_id == "cus_sync1")
    assert failed.outcome == "failed"


def test_a_delete_whose_answer_was_lost_is_confirmed_and_applied(
    mworld: MaintenanceWorld, tmp_path: Path
) -> None:
    mworld.sandbox.faults.drop_next("DELETE", "/v1/customers/cus_sync1", 1, after_apply=True)
    result = _invoke(_fast(mworld), tmp_path, ["customer", "delete", "cus_sync1"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "deleted cus_sync1"
    deletes = [w for w in mworld.writes() if w.method == "DELETE"]
    assert [w.status for w in deletes] == [0, 404]
    [entry] = _audit(mworld, "customer")
    assert (entry.action, entry.outcome) == ("delete_customer", "applied")
    assert '"deleted_now": true' in entry.after


def test_a_delete_of_a_customer_deleted_by_someone_else_is_unchanged(
    mworld: MaintenanceWorld, tmp_path: Path
) -> None:
    mworld.sandbox.store.mark_deleted("test", ["cus_sync1"])
    result = _invoke(mworld, tmp_path, ["customer", "delete", "cus_sync1"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "cus_sync1 was already deleted; nothing to do"
    [entry] = _audit(mworld, "customer")
    assert entry.outcome == "unchanged"
    gateway = _other_party(mworld)
    deletion = gateway.delete_customer("cus_sync1", idempotency_key="k-1")
    assert (deletion.deleted_now, deletion.confirmed_by_retrieve) == (False, True)


# --- 5. compare-and-set before every write ---------------------------------------------


def test_resumed_default_payment_method_keeps_a_default_chosen_meanwhile(
    mworld: MaintenanceWorld,
) -> None:
    with pytest.raises(Killed):
        mworld.run("default-payment-method", apply=True, after_action=_die_after(1))
    assert mworld.customer("cus_pm10").default_payment_method == "pm_10_new"
    # Meanwhile the customer of cus_pm11 adds a newer card but keeps the old one as default.
    other = _other_party(mworld)
    other.attach_payment_method("pm_card_visa", "cus_pm11", idempotency_key="o-1")
    chosen = "pm_11"
    other.update_customer(
        "cus_pm11",
        {"invoice_settings": {"default_payment_method": chosen}},
        idempotency_key="o-2",
    )

    outcome = mworld.run("default-payment-method", apply=True, resume=True)
    assert outcome.exit_code == 0
    assert mworld.customer("cus_pm11").default_payment_method == chosen
    assert _ours(mworld, "/v1/customers/cus_pm11") == []
    assert facts(outcome)["changed_meanwhile"] == 1
    skipped = [e for e in _audit(mworld, "default-payment-method") if e.outcome == "skipped"]
    assert [(e.customer_id, e.error) for e in skipped] == [
        (
            "cus_pm11",
            "changed since the listing: customer cus_pm11 now has a default payment method",
        )
    ]


def test_default_payment_method_skips_a_customer_deleted_during_the_run(
    mworld: MaintenanceWorld,
) -> None:
    with pytest.raises(Killed):
        mworld.run("default-payment-method", apply=True, after_action=_die_after(1))
    mworld.sandbox.store.mark_deleted("test", ["cus_pm11"])
    # The resumed run's stored listing still holds cus_pm11: its cards answer 404.
    outcome = mworld.run("default-payment-method", apply=True, resume=True)
    assert outcome.exit_code == 0
    assert facts(outcome)["deleted_during_run"] == 1
    plan = outcome.result.extra_tables["plan"]
    gone = plan[plan["customer_id"] == "cus_pm11"]
    assert list(gone["action"]) == ["skip"]
    assert list(gone["reason"]) == ["skipped: the customer was deleted during the run"]


def test_resumed_link_users_does_not_link_a_customer_deleted_meanwhile(
    sandbox_server: SandboxServer, tmp_path: Path, database_url: str
) -> None:
    mworld = build(sandbox_server, tmp_path, database_url)
    with pytest.raises(Killed):
        mworld.run("link-users", apply=True, after_action=_die_after(1))
    assert mworld.links()[4] == "cus_un4"
    mworld.sandbox.store.mark_deleted("test", ["cus_un5"])

    outcome = mworld.run("link-users", apply=True, resume=True)
    assert outcome.exit_code == 0
    assert mworld.links()[5] is None
    entry = [e for e in _audit(mworld, "link-users") if e.customer_id == "cus_un5"][-1]
    assert (entry.outcome, entry.error) == (
        "skipped",
        "changed since the listing: customer cus_un5 was deleted",
    )


def test_sync_metadata_re_plans_from_metadata_changed_meanwhile(
    mworld: MaintenanceWorld,
) -> None:
    planned = mworld.run("sync-metadata").result.extra_tables["plan"]
    planned_key = planned.set_index("customer_id").loc["cus_sync2", "idempotency_key"]
    other = _other_party(mworld)

    def change_the_next_one(attempted: int) -> None:
        if attempted == 1:
            other.update_customer(
                "cus_sync2", {"metadata": {"plan": "enterprise"}}, idempotency_key="o-1"
            )

    outcome = mworld.run("sync-metadata", apply=True, after_action=change_the_next_one)
    assert outcome.exit_code == 0
    assert "plan" not in mworld.customer("cus_sync2").metadata  # user 2's plan is NULL
    entry = next(e for e in _audit(mworld, "sync-metadata") if e.customer_id == "cus_sync2")
    assert entry.outcome == "applied"
    assert entry.before == '{"metadata": {"plan": "enterprise"}}'
    assert entry.idempotency_key != planned_key
    [write] = _ours(mworld, "/v1/customers/cus_sync2")
    assert write.idempotency_key == entry.idempotency_key


def test_sync_metadata_writes_nothing_for_a_change_someone_made_meanwhile(
    mworld: MaintenanceWorld,
) -> None:
    other = _other_party(mworld)

    def do_it_for_us(attempted: int) -> None:
        if attempted == 1:
            other.update_customer("cus_sync2", {"metadata": {"plan": ""}}, idempotency_key="o-1")

    outcome = mworld.run("sync-metadata", apply=True, after_action=do_it_for_us)
    assert (facts(outcome)["applied"], facts(outcome)["unchanged"]) == (1, 1)
    assert _ours(mworld, "/v1/customers/cus_sync2") == []


# --- 6. the lease ------------------------------------------------------------------------


def test_a_run_whose_lease_is_taken_over_writes_nothing_more(mworld: MaintenanceWorld) -> None:
    store = StateStore(mworld.settings.state.url)

    def taken_over(attempted: int) -> None:
        if attempted == 1:
            # Another run finds the lease expired (this one stalled) and takes it.
            later = utc_now() + timedelta(hours=1)
            assert store.acquire_lock("sync-metadata", "another-run", 300, now=later)

    try:
        with pytest.raises(LeaseLostError, match="taken over by another run"):
            mworld.run("sync-metadata", apply=True, after_action=taken_over)
        [record] = store.list_runs("sync-metadata")
        assert record.status is RunStatus.INTERRUPTED
        assert store.lock_holder("sync-metadata").owner == "another-run"  # type: ignore[union-attr]
    finally:
        store.close()
    assert len(_ours(mworld)) == 1


def test_a_run_asked_to_stop_starts_no_further_write(mworld: MaintenanceWorld) -> None:
    # SIGTERM to `run` (or serve shutting down) sets the run's stop event mid-plan.
    stop = threading.Event()
    with pytest.raises(RunInterrupted, match="stopped by a signal before the next write"):
        mworld.run("sync-metadata", apply=True, stop_event=stop, after_action=lambda _n: stop.set())
    store = StateStore(mworld.settings.state.url)
    try:
        [record] = store.list_runs("sync-metadata")
        assert record.status is RunStatus.INTERRUPTED
        assert store.lock_holder("sync-metadata") is None
    finally:
        store.close()
    assert len(_ours(mworld)) == 1


# --- 7. no audit row, no write -----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["customer", "delete", "cus_sync1"],
        ["customer", "update-metadata", "cus_sync1", "plan=pro"],
        ["customer", "get-or-create", "--user-id", "77", "--email", "n77@example.com"],
        ["customer", "attach-pm", "cus_sync1", "pm_card_visa"],
    ],
    ids=["delete", "update-metadata", "get-or-create", "attach-pm"],
)
def test_customer_writes_send_nothing_when_the_audit_row_cannot_be_written(
    mworld: MaintenanceWorld, tmp_path: Path, args: list[str]
) -> None:
    path = tmp_path / "state.db"
    StateStore(mworld.settings.state.url).close()
    engine = sa.create_engine(mworld.settings.state.url)
    AuditLog(engine)  # its table exists: only writing fails
    engine.dispose()
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"

    result = _invoke(mworld, tmp_path, args, state_url=read_only)

    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("stripe-reconcile:")]
    assert len(lines) == 1, result.stderr
    assert "the audit row cannot be written" in lines[0]
    assert "nothing was sent to Stripe" in lines[0]
    assert mworld.writes() == []
    assert mworld.customer("cus_sync1") is not None
