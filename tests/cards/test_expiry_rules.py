"""The pure card rules: expiry arithmetic at month, year and leap-day edges, and each finding."""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd
import pytest

from reconcile.rules.cards import (
    REMINDER_COLUMNS,
    card_expired,
    card_expiring,
    card_findings,
    card_from_object,
    cards_frame,
    customer_people,
    duplicate_card,
    expiry_date,
    missing_default_payment_method,
    reminder_candidates,
    with_expiry,
)
from reconcile.rules.findings import FINDING_COLUMNS
from reconcile.rules.snapshots import customers_frame, normalize_users


def card(
    customer: str,
    pm: str,
    year: int,
    month: int,
    *,
    default: bool = True,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    return {
        "customer_id": customer,
        "payment_method_id": pm,
        "brand": "visa",
        "last4": "4242",
        "exp_month": month,
        "exp_year": year,
        "fingerprint": fingerprint or f"fp_{pm}",
        "is_default": default,
    }


def people(*customer_ids: str) -> pd.DataFrame:
    customers = customers_frame(
        [{"id": c, "email": f"{c}@example.com", "name": f"Name {c}"} for c in customer_ids], []
    )
    users = normalize_users(pd.DataFrame({"user_id": ["7"], "customer_id": [customer_ids[0]]}), [])
    return customer_people(customers, users, "user_id")


@pytest.mark.parametrize(
    ("year", "month", "last_day"),
    [
        (2026, 12, date(2026, 12, 31)),  # December: not month 13 of the same year
        (2028, 2, date(2028, 2, 29)),  # leap year
        (2100, 2, date(2100, 2, 28)),  # divisible by 100, not by 400: no leap day
        (2000, 2, date(2000, 2, 29)),  # divisible by 400: leap day
        (2027, 2, date(2027, 2, 28)),
        (2026, 4, date(2026, 4, 30)),
        (2026, 1, date(2026, 1, 31)),
    ],
)
def test_a_card_is_valid_through_the_last_day_of_its_month(
    year: int, month: int, last_day: date
) -> None:
    assert expiry_date(year, month) == last_day


def test_a_month_outside_1_to_12_is_refused() -> None:
    with pytest.raises(ValueError, match="exp_month 13"):
        expiry_date(2026, 13)


@pytest.mark.parametrize(
    ("today", "year", "month", "days_left"),
    [
        (date(2026, 12, 31), 2026, 12, 0),  # today is the last day of the month: still valid
        (date(2027, 1, 1), 2026, 12, -1),  # expired yesterday, across a year end
        (date(2026, 12, 15), 2027, 1, 47),  # window crossing a year end
        (date(2028, 2, 29), 2028, 2, 0),  # leap day is the last valid day
        (date(2028, 2, 28), 2028, 2, 1),
        (date(2028, 3, 1), 2028, 2, -1),
        (date(2027, 2, 28), 2027, 2, 0),
    ],
)
def test_days_left_counts_whole_days_to_the_last_valid_day(
    today: date, year: int, month: int, days_left: int
) -> None:
    frame = with_expiry(cards_frame([card("cus_a", "pm_1", year, month)]), today)
    assert int(frame.loc[0, "days_left"]) == days_left


def test_expiring_and_expired_around_today() -> None:
    today = date(2026, 12, 31)
    cards = cards_frame(
        [
            card("cus_a", "pm_today", 2026, 12),  # last valid day: expiring, 0 days left
            card("cus_a", "pm_jan", 2027, 1, default=False),  # 31 days: outside a 30-day window
            card("cus_b", "pm_nov", 2026, 11),  # expired 31 days ago
            card("cus_b", "pm_later", 2029, 5, default=False),
        ]
    )
    who = people("cus_a", "cus_b")
    expiring = card_expiring(cards, who, today, 30)
    assert expiring["related_ids"].tolist() == ["pm_today"]
    assert "valid through 2026-12-31 (expires today)" in expiring.loc[0, "detail"]
    assert expiring.loc[0, "user_id"] == "7"
    assert expiring.loc[0, "email"] == "cus_a@example.com"
    assert card_expiring(cards, who, today, 31)["related_ids"].tolist() == ["pm_jan", "pm_today"]
    expired = card_expired(cards, who, today)
    assert expired["related_ids"].tolist() == ["pm_nov"]
    assert "31 days ago" in expired.loc[0, "detail"]
    assert "still the default" in expired.loc[0, "detail"]
    assert list(expired.columns) == list(FINDING_COLUMNS)
    assert set(expired["severity"]) == {"warning"}


def test_a_window_crossing_a_year_end_reaches_into_next_year() -> None:
    cards = cards_frame([card("cus_a", "pm_jan", 2027, 1), card("cus_a", "pm_feb", 2027, 2)])
    found = card_expiring(cards, people("cus_a"), date(2026, 12, 20), 45)
    assert found["related_ids"].tolist() == ["pm_jan"]  # Jan 31 is 42 days away; Feb 28 is 70


def test_expired_yesterday_is_expired_not_expiring() -> None:
    cards = cards_frame([card("cus_a", "pm_1", 2026, 5)])
    today = date(2026, 6, 1)
    assert card_expiring(cards, people("cus_a"), today, 30).empty
    assert card_expired(cards, people("cus_a"), today)["detail"].str.contains("1 day ago").all()


def test_cards_without_a_usable_expiry_are_left_out() -> None:
    rows = [card("cus_a", "pm_1", 2026, 5), card("cus_a", "pm_2", 2026, 5)]
    rows[0]["exp_month"] = None
    rows[1]["exp_month"] = 0
    cards = cards_frame(rows)
    assert card_findings(
        cards, customers_frame([], []), people("cus_a"), date(2030, 1, 1), days=30, all_cards=False
    ).empty


def test_missing_default_and_duplicate_card() -> None:
    cards = cards_frame(
        [
            card("cus_a", "pm_1", 2030, 1, default=False, fingerprint="fpX"),
            card("cus_a", "pm_2", 2030, 1, default=False, fingerprint="fpX"),
            card("cus_b", "pm_3", 2030, 1, default=True, fingerprint="fpX"),  # family card
            card("cus_b", "pm_4", 2031, 1, default=False, fingerprint="fpY"),
        ]
    )
    customers = customers_frame(
        [
            {"id": "cus_a", "invoice_settings": {"default_payment_method": None}},
            {"id": "cus_b", "invoice_settings": {"default_payment_method": "pm_3"}},
            {"id": "cus_c", "invoice_settings": {"default_payment_method": None}},  # no cards
        ],
        [],
    )
    who = people("cus_a", "cus_b", "cus_c")
    missing = missing_default_payment_method(cards, customers, who)
    assert missing[["customer_id", "related_ids"]].values.tolist() == [["cus_a", "pm_1;pm_2"]]
    dups = duplicate_card(cards, who)
    assert dups[["customer_id", "related_ids", "stripe_value"]].values.tolist() == [
        ["cus_a", "pm_1;pm_2", "fpX"]
    ]
    assert "attached 2 times" in dups.loc[0, "detail"]
    only_expiry = card_findings(cards, customers, who, date(2026, 1, 1), days=30, all_cards=False)
    assert only_expiry.empty


def test_card_from_object_reads_payment_methods_and_legacy_sources() -> None:
    pm = {
        "id": "pm_1",
        "object": "payment_method",
        "type": "card",
        "card": {"brand": "amex", "last4": "0005", "exp_month": 2, "exp_year": 2028},
    }
    source = {
        "id": "card_1",
        "object": "card",
        "brand": "visa",
        "last4": "1111",
        "exp_month": 3,
        "exp_year": 2027,
        "fingerprint": "f",
    }
    sepa = {"id": "pm_2", "object": "payment_method", "type": "sepa_debit", "sepa_debit": {}}
    bank = {"id": "ba_1", "object": "bank_account"}
    assert card_from_object(pm, "cus", is_default=True)["brand"] == "amex"  # type: ignore[index]
    assert card_from_object(source, "cus", is_default=True)["last4"] == "1111"  # type: ignore[index]
    assert card_from_object(sepa, "cus", is_default=True) is None
    assert card_from_object(bank, "cus", is_default=True) is None


def test_reminder_candidates_soonest_first_with_the_issue_columns() -> None:
    cards = cards_frame(
        [
            card("cus_a", "pm_exp_default", 2026, 1),  # expired, default: remind
            card("cus_a", "pm_exp_other", 2026, 1, default=False),  # expired, not default: no
            card("cus_b", "pm_soon", 2026, 3, default=False),  # expiring: remind
            card("cus_c", "pm_later", 2027, 3),
        ]
    )
    who = people("cus_a", "cus_b", "cus_c")
    got = reminder_candidates(cards, who, date(2026, 3, 10), 30)
    assert got["payment_method_id"].tolist() == ["pm_exp_default", "pm_soon"]
    assert list(got.columns[: len(REMINDER_COLUMNS)]) == list(REMINDER_COLUMNS)
    assert got["days_left"].tolist() == [-38, 21]
    assert got["expires_on"].tolist() == ["2026-01-31", "2026-03-31"]


def test_customers_without_an_email_get_no_reminder() -> None:
    customers = customers_frame([{"id": "cus_a", "email": None, "name": None}], [])
    users = normalize_users(pd.DataFrame({"user_id": ["1"], "customer_id": ["cus_x"]}), [])
    who = customer_people(customers, users, "user_id")
    cards = cards_frame([card("cus_a", "pm_1", 2026, 3)])
    assert reminder_candidates(cards, who, date(2026, 3, 10), 30).empty


def test_people_prefer_stripe_email_and_fall_back_on_the_linked_user() -> None:
    customers = customers_frame(
        [
            {"id": "cus_a", "email": None, "name": "", "metadata": {"user_id": "99"}},
            {"id": "cus_b", "email": "b@stripe.example", "name": "B", "metadata": {"user_id": "5"}},
        ],
        ["user_id"],
    )
    users = normalize_users(
        pd.DataFrame(
            {
                "user_id": ["1"],
                "email": ["a@local.example"],
                "name": ["A"],
                "customer_id": ["cus_a"],
            }
        ),
        [],
    )
    who = customer_people(customers, users, "user_id").set_index("customer_id")
    assert who.loc["cus_a"].tolist() == ["1", "a@local.example", "A"]
    assert who.loc["cus_b"].tolist() == ["5", "b@stripe.example", "B"]
