"""dedupe's activity scan meets customers deleted after the listing: a killed `--apply`
resumed from its stored pages (which still hold what it deleted), and a customer deleted
by someone between the listing and its call. Neither fails the run."""

from __future__ import annotations

import pytest

from jobs.registry import JOBS
from jobs.runner import execute_job
from reconcile.state.store import RunStatus, StateStore
from tests.maintenance.meanwhile import deleting_gateway
from tests.maintenance.world import MaintenanceWorld, facts


class Killed(Exception):
    """Stands for the process dying between two actions."""


def _die_after_first(attempted: int) -> None:
    if attempted == 1:
        raise Killed


def test_dedupe_killed_after_a_delete_then_resumed_exits_0_and_converges(
    mworld: MaintenanceWorld,
) -> None:
    # The plan deletes cus_dupB, then tags cus_dupC; the run dies between the two.
    with pytest.raises(Killed):
        mworld.run("dedupe", apply=True, after_action=_die_after_first)
    assert mworld.customer("cus_dupB") is None
    state = StateStore(mworld.settings.state.url)
    try:
        killed = state.list_runs("dedupe", limit=1)[0]
    finally:
        state.close()
    assert killed.status is RunStatus.FAILED

    # The resumed run reads back the killed run's pages, cus_dupB among them.
    resumed = mworld.run("dedupe", apply=True, resume=True)

    assert resumed.exit_code == 0, facts(resumed)
    assert facts(resumed)["customers_deleted_during_run"] == 1
    assert facts(resumed)["applied"] == 1
    assert mworld.customer("cus_dupC").metadata["duplicate_of"] == "cus_dupA"
    assert mworld.customer("cus_dupA") is not None
    plan = resumed.result.extra_tables["plan"]
    assert "cus_dupB" not in set(plan["customer_id"])
    # Converged: a fresh run has nothing left to do.
    again = mworld.run("dedupe", apply=True)
    assert again.exit_code == 0
    assert facts(again)["planned_changes"] == 0


def test_dedupe_scan_counts_a_duplicate_deleted_before_its_call(
    mworld: MaintenanceWorld,
) -> None:
    factory, made = deleting_gateway(mworld.sandbox, ["cus_dupB"])

    outcome = execute_job(
        JOBS["dedupe"], mworld.settings, options={"apply": True}, gateway_factory=factory
    )

    assert made[0].deleted == ["cus_dupB"]
    assert outcome.exit_code == 0, facts(outcome)
    assert facts(outcome)["customers_deleted_during_run"] == 1
    assert facts(outcome)["failed"] == 0
    plan = outcome.result.extra_tables["plan"]
    assert "cus_dupB" not in set(plan["customer_id"])
    assert mworld.customer("cus_dupC").metadata["duplicate_of"] == "cus_dupA"
