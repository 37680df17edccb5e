"""card-expiry against the seeded sandbox: every planted card fact found, nothing else."""

from __future__ import annotations

import pandas as pd
import pytest

from jobs.runner import RunOutcome
from reconcile.rules.cards import REMINDER_COLUMNS
from sandbox.cardtruth import expected_card_keys, score_card_findings
from tests.cards.helpers import run_card_expiry, unlimited_sandbox
from tests.seeded import SeededWorld


def default_ids(world: SeededWorld) -> set[str]:
    return {
        c["default_payment_method"] for c in world.account.customers if c["default_payment_method"]
    }


@pytest.mark.parametrize("all_cards", [False, True], ids=["default-cards", "all-cards"])
def test_precision_and_recall_are_100_percent(world: SeededWorld, all_cards: bool) -> None:
    with unlimited_sandbox(world):
        outcome = run_card_expiry(world, all_cards=all_cards)
    expected = expected_card_keys(
        world.account.card_ground_truth,
        all_cards=all_cards,
        default_payment_method_ids=default_ids(world),
        excluded_customer_ids=world.account.out_of_scope_customer_ids,
    )
    score = score_card_findings(outcome.findings, expected)
    assert score.missed == []
    assert score.unexpected == []
    kinds = set(outcome.findings["kind"])
    assert {"card_expired", "card_expiring"} <= kinds
    if all_cards:
        assert {"missing_default_payment_method", "duplicate_card"} <= kinds
    else:
        assert kinds == {"card_expired", "card_expiring"}
    assert outcome.exit_code == 0


def test_default_scope_costs_one_request_per_100_customers_with_the_expand(
    world: SeededWorld,
) -> None:
    world.sandbox.request_log.clear()
    outcome = run_card_expiry(world)
    entries = [e for e in world.sandbox.request_log.entries() if e.path.startswith("/v1/")]
    listed = len(world.account.customers) - len(world.account.deleted_customer_ids)
    # The listing pages `created` windows concurrently (reconcile.listing.walk), cut while it
    # runs: each window may end on a short or empty page, one extra request at most each.
    pages = -(-listed // 100)
    assert pages <= len(entries) <= 2 * pages + world.settings.resume.windows + 2
    assert all(e.path == "/v1/customers" and e.status == 200 for e in entries)
    expands = set(entries[0].params["expand"].values())
    assert expands == {"data.invoice_settings.default_payment_method", "data.default_source"}
    assert outcome.summary["requests_by_endpoint"] == {"GET /v1/customers": len(entries)}


def test_all_cards_lists_each_in_scope_customer_once(world: SeededWorld) -> None:
    world.sandbox.request_log.clear()
    with unlimited_sandbox(world):
        outcome = run_card_expiry(world, all_cards=True)
    pm_calls = [
        e.path for e in world.sandbox.request_log.entries() if e.path.endswith("/payment_methods")
    ]
    assert len(pm_calls) == len(set(pm_calls)) == outcome.summary["customers_scanned"]
    out_of_scope = set(world.account.out_of_scope_customer_ids)
    assert not any(path.split("/")[3] in out_of_scope for path in pm_calls)
    # Deterministic whatever order the threads finish in.
    with unlimited_sandbox(world):
        again = run_card_expiry(world, all_cards=True)
    pd.testing.assert_frame_equal(outcome.findings, again.findings)


def test_reminders_table_lists_what_would_be_sent(world: SeededWorld) -> None:
    outcome = run_card_expiry(world, days=30)
    reminders = pd.read_csv(outcome.run_dir / "reminders.csv", dtype=str, keep_default_na=False)
    parquet = pd.read_parquet(outcome.run_dir / "reminders.parquet")
    assert list(reminders.columns) == list(REMINDER_COLUMNS) == list(parquet.columns)
    expiring = outcome.findings[outcome.findings["kind"] == "card_expiring"]
    expired = outcome.findings[outcome.findings["kind"] == "card_expired"]
    with_email = outcome.findings["email"] != ""
    assert len(reminders) == int(
        (with_email & outcome.findings["kind"].isin(["card_expiring", "card_expired"])).sum()
    )
    assert len(expiring) > 0
    assert len(expired) > 0
    assert (reminders["is_default"] == "True").all()  # default scope: default cards only
    days = reminders["days_left"].astype(int)
    assert days.is_monotonic_increasing
    assert days.max() <= 30
    summary = outcome.summary
    assert summary["reminders"].startswith(f"would send {summary['reminder_emails_due']} email(s)")
    assert summary["reminders_due"] == len(reminders)


def expiring_count(outcome: RunOutcome) -> int:
    return int((outcome.findings["kind"] == "card_expiring").sum())


def test_a_wider_window_reports_more_expiring_cards(world: SeededWorld) -> None:
    narrow = run_card_expiry(world, days=0)
    wide = run_card_expiry(world, days=400)
    assert expiring_count(narrow) < expiring_count(wide)
    assert wide.summary["window_days"] == 400
