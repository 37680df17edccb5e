"""Every job that writes, through the sandbox: a dry run changes nothing; --apply reaches
the planned end state; a second run plans nothing; a run killed between two actions and
run again completes the rest and applies nothing twice; a plan over --max-changes and a
live run without confirmation write nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest

from reconcile.errors import ConfigError
from tests.maintenance.world import MaintenanceWorld, facts


def _sync_done(w: MaintenanceWorld) -> None:
    assert w.customer("cus_sync1").metadata == {"user_id": "1", "plan": "pro"}
    assert w.customer("cus_sync2").metadata == {"user_id": "2"}
    assert "plan" not in w.customer("cus_big").metadata  # skipped: 51 keys


def _link_done(w: MaintenanceWorld) -> None:
    links = w.links()
    assert links[4] == "cus_un4"
    assert links[5] == "cus_un5"
    created = [c for c in w.live_customers() if c.metadata.get("user_id") == "6"]
    assert len(created) == 1, "user 6's customer must be created exactly once"
    assert (created[0].email, created[0].name) == ("u6@example.com", "User Six")
    assert links[6] == created[0].id


def _dedupe_done(w: MaintenanceWorld) -> None:
    assert w.customer("cus_dupA") is not None
    assert "duplicate_of" not in w.customer("cus_dupA").metadata
    assert w.customer("cus_dupB") is None  # safe: deleted
    assert w.customer("cus_dupC").metadata["duplicate_of"] == "cus_dupA"  # has a card


def _gdpr_done(w: MaintenanceWorld) -> None:
    assert w.customer("cus_gone8") is None
    assert w.customer("cus_gone9") is None
    links = w.links()
    assert links[8] is None
    assert links[9] is None
    assert links[1] == "cus_sync1"


def _default_pm_done(w: MaintenanceWorld) -> None:
    assert w.customer("cus_pm10").default_payment_method == "pm_10_new"
    assert w.customer("cus_pm11").default_payment_method == "pm_11"
    assert w.customer("cus_pm12").default_payment_method is None  # only an expired card


@dataclass(frozen=True)
class Case:
    job: str
    writes: int  # planned changes
    stripe_writes: int  # of them, requests to Stripe
    done: Callable[[MaintenanceWorld], None]
    skips_after: int = 0  # skip rows that stay in the plan once done
    options: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("sync-metadata", 2, 2, _sync_done, skips_after=1),
    Case("link-users", 3, 1, _link_done, options={"create_missing": True}),
    Case("dedupe", 2, 2, _dedupe_done),
    Case("gdpr-delete", 2, 2, _gdpr_done),
    Case("default-payment-method", 2, 2, _default_pm_done, skips_after=1),
]
IDS = [case.job for case in CASES]


def _snapshot(w: MaintenanceWorld) -> tuple[Any, ...]:
    state = {
        c.id: (dict(c.metadata), c.email, c.name, c.default_payment_method)
        for c in w.live_customers()
    }
    return state, w.links()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_dry_run_changes_nothing(mworld: MaintenanceWorld, case: Case) -> None:
    before = _snapshot(mworld)
    outcome = mworld.run(case.job, **case.options)
    assert outcome.exit_code == 0
    assert mworld.writes() == []
    assert _snapshot(mworld) == before
    plan = pd.read_csv(outcome.run_dir / "plan.csv", dtype=str, keep_default_na=False)
    assert int((plan["action"] != "skip").sum()) == case.writes
    assert plan["idempotency_key"].str.len().between(1, 255).all()
    assert not (outcome.run_dir / "audit.csv").exists()
    assert facts(outcome)["dry_run"] is True


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_apply_reaches_the_end_state_and_a_second_run_plans_nothing(
    mworld: MaintenanceWorld, case: Case
) -> None:
    outcome = mworld.run(case.job, apply=True, **case.options)
    assert outcome.exit_code == 0, facts(outcome)
    assert facts(outcome)["applied"] == case.writes
    case.done(mworld)
    assert len({r.idempotency_key for r in mworld.writes()}) == case.stripe_writes
    assert all(r.status == 200 for r in mworld.writes())

    audit = pd.read_csv(outcome.run_dir / "audit.csv", dtype=str, keep_default_na=False)
    assert len(audit) == case.writes
    assert set(audit["outcome"]) == {"applied"}
    assert (audit["job"] == case.job).all()

    again = mworld.run(case.job, apply=True, **case.options)
    assert facts(again)["planned_changes"] == 0
    assert facts(again)["skipped"] == case.skips_after
    case.done(mworld)


class Killed(Exception):
    """Stands for the process dying between two actions."""


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_run_killed_between_actions_completes_on_the_next_without_repeating(
    mworld: MaintenanceWorld, case: Case
) -> None:
    def die_after_first(attempted: int) -> None:
        if attempted == 1:
            raise Killed

    with pytest.raises(Killed):
        mworld.run(case.job, apply=True, after_action=die_after_first, **case.options)
    first_run_writes = len(mworld.writes())
    assert first_run_writes <= case.stripe_writes

    outcome = mworld.run(case.job, apply=True, **case.options)
    assert outcome.exit_code == 0
    assert facts(outcome)["applied"] == case.writes - 1
    case.done(mworld)
    writes = mworld.writes()
    # Each change went out under one key, once: nothing was applied twice.
    assert len({r.idempotency_key for r in writes}) == case.stripe_writes
    assert len(writes) == case.stripe_writes


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_plan_over_max_changes_writes_nothing(mworld: MaintenanceWorld, case: Case) -> None:
    before = _snapshot(mworld)
    with pytest.raises(ConfigError, match=rf"the plan has {case.writes} changes, more than"):
        mworld.run(case.job, apply=True, max_changes=case.writes - 1, **case.options)
    assert mworld.writes() == []
    assert _snapshot(mworld) == before


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_live_mode_without_confirmation_writes_nothing(
    live_world: MaintenanceWorld, case: Case
) -> None:
    before = _snapshot(live_world)
    with pytest.raises(ConfigError, match="--confirm-live"):
        live_world.run(case.job, apply=True, **case.options)
    assert live_world.writes() == []
    assert _snapshot(live_world) == before


def test_live_mode_with_confirmation_writes(live_world: MaintenanceWorld) -> None:
    outcome = live_world.run("sync-metadata", apply=True, confirm_live=True)
    assert facts(outcome)["applied"] == 2
    _sync_done(live_world)
    assert {r.mode for r in live_world.writes()} == {"live"}
