"""The reminder memory on SQLite and PostgreSQL, and the pure due-or-not decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from jobs.reminders import due_reminders
from reconcile.state.reminders_sent import ReminderMemory, SentReminder

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def candidates(*rows: tuple[str, int, int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "payment_method_id": pd.array([r[0] for r in rows], dtype="string"),
            "exp_year": pd.array([r[1] for r in rows], dtype="Int64"),
            "exp_month": pd.array([r[2] for r in rows], dtype="Int64"),
        }
    )


def test_memory_round_trip_counts_and_keeps_modes_apart(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        test = ReminderMemory(engine, "test")
        test.record(SentReminder("pm_1", "cus_1", 2026, 3), at=T0, run_id="r1")
        test.record(SentReminder("pm_1", "cus_1", 2026, 3), at=T0 + timedelta(days=8), run_id="r2")
        test.record(SentReminder("pm_1", "cus_1", 2029, 3), at=T0, run_id="r2")  # renewed card
        history = test.history(["pm_1", "pm_2"]).sort_values("exp_year", ignore_index=True)
        assert history[["exp_year", "times_sent"]].values.tolist() == [[2026, 2], [2029, 1]]
        assert history.loc[0, "last_sent_at"] == T0 + timedelta(days=8)
        assert ReminderMemory(engine, "live").history(["pm_1"]).empty
    finally:
        engine.dispose()


def test_due_never_sent_or_after_the_interval_at_most_twice() -> None:
    wanted = candidates(
        ("pm_new", 2026, 3), ("pm_once", 2026, 3), ("pm_twice", 2026, 3), ("pm_renewed", 2026, 3)
    )
    history = pd.DataFrame(
        {
            "payment_method_id": ["pm_once", "pm_twice", "pm_renewed"],
            "exp_year": [2026, 2026, 2025],
            "exp_month": [3, 3, 3],
            "last_sent_at": [T0, T0, T0],
            "times_sent": [1, 2, 1],
        }
    )

    def due(now: datetime, again: int | None) -> list[str]:
        return list(due_reminders(wanted, history, now, again)["payment_method_id"])

    assert due(T0 + timedelta(days=30), None) == ["pm_new", "pm_renewed"]
    assert due(T0 + timedelta(days=6), 7) == ["pm_new", "pm_renewed"]
    assert due(T0 + timedelta(days=7), 7) == ["pm_new", "pm_once", "pm_renewed"]
    assert due(T0, 7) == ["pm_new", "pm_renewed"]
    empty_history = history.iloc[0:0]
    assert len(due_reminders(wanted, empty_history, T0, None)) == 4


def test_default_template_speaks_of_one_card_or_several() -> None:
    from jobs.reminders import load_templates
    from reconcile.settings import CardExpirySettings

    templates = load_templates(CardExpirySettings())
    soon = {
        "brand": "visa",
        "last4": "4242",
        "exp_month": 2,
        "exp_year": 2028,
        "expires_on": "2028-02-29",
        "days_left": 1,
        "is_default": True,
    }
    gone = {**soon, "last4": "0005", "expires_on": "2028-01-31", "days_left": -28}
    subject, body = templates.render("Zoë", "z@example.com", [soon])
    assert subject == "Please update your card ending in 4242"
    assert body.startswith("Hello Zoë,")
    assert "valid through 2028-02-29 (1 day from now)" in body
    _, expired = templates.render(None, "z@example.com", [gone])
    assert expired.startswith("Hello,")
    assert "expired on 2028-01-31" in expired
    _, both = templates.render("Zoë", "z@example.com", [gone, soon])
    assert "ending in 0005, valid through 2028-01-31" in both
    assert "ending in 4242, valid through 2028-02-29 (the card we charge)" in both
