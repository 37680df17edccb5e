"""--all-cards starts its payment-method calls while the customer listing is still going."""

from __future__ import annotations

from tests.cards.helpers import run_card_expiry, unlimited_sandbox
from tests.seeded import SeededWorld


def test_payment_method_calls_start_before_the_listing_ends(world: SeededWorld) -> None:
    world.sandbox.request_log.clear()
    # A little latency, so a listing page takes long enough to overlap with anything.
    world.sandbox.latency_ms = 30
    try:
        with unlimited_sandbox(world):
            outcome = run_card_expiry(world, all_cards=True)
    finally:
        world.sandbox.latency_ms = 0
    entries = world.sandbox.request_log.entries()
    pages = [e.time for e in entries if e.path == "/v1/customers"]
    cards = [e.time for e in entries if e.path.endswith("/payment_methods")]
    assert len(pages) >= 4
    assert len(cards) == outcome.summary["customers_scanned"]
    assert min(cards) < max(pages), "payment methods were listed only after every page"
    # Both endpoints were busy at once: calls answered while pages were still coming.
    assert sum(t < max(pages) for t in cards) >= 10
