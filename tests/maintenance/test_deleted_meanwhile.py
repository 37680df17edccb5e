"""A customer deleted in Stripe between the listing and its write: that action is skipped
alone (compare-and-set reads it first), with the reason, and the run goes on."""

from __future__ import annotations

import sqlalchemy as sa

from reconcile.errors import EXIT_OK
from reconcile.state.audit import AuditLog
from tests.maintenance.world import MaintenanceWorld, facts


def test_an_update_of_a_customer_deleted_meanwhile_is_skipped_and_the_run_goes_on(
    mworld: MaintenanceWorld,
) -> None:
    plan = mworld.run("sync-metadata").result.extra_tables["plan"]
    targets = [c for c in plan["customer_id"] if c in ("cus_sync1", "cus_sync2")]
    assert len(targets) == 2
    first, second = targets

    def delete_the_next_one(done: int) -> None:
        # Someone deletes the customer in the dashboard while the run is under way.
        if done == 1:
            mworld.sandbox.store.mark_deleted("test", [second])

    mworld.sandbox.request_log.clear()
    outcome = mworld.run("sync-metadata", apply=True, after_action=delete_the_next_one)

    assert outcome.exit_code == EXIT_OK
    assert outcome.summary["status"] == "succeeded"
    assert (facts(outcome)["applied"], facts(outcome)["changed_meanwhile"]) == (1, 1)
    engine = sa.create_engine(mworld.settings.state.url)
    try:
        entries = {e.customer_id: e for e in AuditLog(engine).entries(job="sync-metadata")}
    finally:
        engine.dispose()
    assert entries[first].outcome == "applied"
    gone = entries[second]
    assert gone.outcome == "skipped"
    assert gone.error == f"changed since the listing: customer {second} was deleted"
    assert [w.path for w in mworld.writes()] == [f"/v1/customers/{first}"]
    # The next run sees the customer gone and plans nothing more for it.
    again = mworld.run("sync-metadata").result.extra_tables["plan"]
    assert second not in set(again["customer_id"])
