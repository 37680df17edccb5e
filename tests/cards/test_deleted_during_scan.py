"""card-expiry --all-cards meets a customer deleted between the listing and its call: it is
counted as deleted during the run, never a failed run. A 404 that points at the other mode
(a key of the wrong mode) still stops everything."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.per_customer import DeletedMeanwhile, unless_deleted
from reconcile.errors import StripeNotFoundError
from tests.cards.helpers import fast_gateway, run_card_expiry, unlimited_sandbox
from tests.maintenance.meanwhile import deleting_gateway
from tests.seeded import SeededWorld


def test_all_cards_counts_a_customer_deleted_before_its_call(world: SeededWorld) -> None:
    with unlimited_sandbox(world):
        reference = run_card_expiry(world, all_cards=True)
        doomed = str(reference.findings["customer_id"].iloc[0])
        factory, made = deleting_gateway(world.sandbox, [doomed])

        outcome = run_card_expiry(world, all_cards=True, gateway_factory=factory)

    assert made[0].deleted == [doomed]
    assert outcome.exit_code == 0
    summary = outcome.summary
    assert summary["customers_deleted_during_run"] == 1
    assert summary["customers_scanned"] == reference.summary["customers_scanned"] - 1
    assert doomed not in set(outcome.findings["customer_id"])
    reminders = outcome.result.extra_tables["reminders"]
    assert doomed not in set(reminders["customer_id"])
    # Everyone else is reported as before.
    others = reference.findings[reference.findings["customer_id"] != doomed]
    assert len(outcome.findings) == len(others)


def test_unless_deleted_gives_deleted_meanwhile_for_a_deleted_customer(world: SeededWorld) -> None:
    customer_id = next(world.sandbox.store.mode("test").newest_first()).id
    world.sandbox.store.mark_deleted("test", [customer_id])
    gateway = fast_gateway(world.settings)
    try:
        found = unless_deleted(
            gateway, customer_id, lambda: list(gateway.list_payment_methods(customer_id))
        )
    finally:
        gateway.close()
    assert found == DeletedMeanwhile(customer_id)


def test_unless_deleted_raises_a_404_of_the_other_mode(world: SeededWorld) -> None:
    # Only live mode holds this id: Stripe's 404 says so, and a test-mode key meeting it is
    # a key of the wrong mode, not a deletion.
    live_only = "cus_Live1"
    world.sandbox.store.bulk_load("live", [{"id": live_only, "created": 1, "metadata": {}}])
    gateway = fast_gateway(world.settings)

    def methods() -> list[dict[str, Any]]:
        return list(gateway.list_payment_methods(live_only))

    try:
        with pytest.raises(StripeNotFoundError) as raised:
            unless_deleted(gateway, live_only, methods)
    finally:
        gateway.close()
    assert raised.value.other_mode


def test_unless_deleted_keeps_a_404_about_something_else(world: SeededWorld) -> None:
    # The customer is there: a 404 naming another object is not its deletion.
    customer_id = next(world.sandbox.store.mode("test").newest_first()).id
    gateway = fast_gateway(world.settings)
    try:
        with pytest.raises(StripeNotFoundError) as raised:
            unless_deleted(gateway, customer_id, lambda: gateway.retrieve_customer("cus_Nope1"))
    finally:
        gateway.close()
    assert raised.value.object_id == "cus_Nope1"
