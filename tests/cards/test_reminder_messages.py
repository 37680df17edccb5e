"""Reminder emails: one per customer with all its due cards; a refused address fails alone."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa

from jobs.reminders import load_templates, reminder_messages, send_reminders
from reconcile.settings import CardExpirySettings, EmailSettings
from reconcile.state.reminders_sent import ReminderMemory
from tests.cards.conftest import SmtpServer

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _due(*rows: tuple[str, str | None, str | None, str, int]) -> pd.DataFrame:
    """(customer id, email, name, payment method id, exp_month) per due card."""
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "email": pd.array([r[1] for r in rows], dtype="string"),
            "name": pd.array([r[2] for r in rows], dtype="string"),
            "payment_method_id": [r[3] for r in rows],
            "brand": ["visa"] * len(rows),
            "last4": [r[3][-4:] for r in rows],
            "exp_month": [r[4] for r in rows],
            "exp_year": [2026] * len(rows),
            "expires_on": [f"2026-{r[4]:02d}-28" for r in rows],
            "days_left": [10] * len(rows),
            "is_default": [True] * len(rows),
        }
    )


def test_one_message_per_customer_with_every_due_card_in_it() -> None:
    due = _due(
        ("cus_b", "bo@example.com", None, "pm_b_1111", 3),
        ("cus_a", "ada@example.com", "Ada", "pm_a_2222", 3),
        ("cus_a", "ada@example.com", None, "pm_a_3333", 4),
        ("cus_c", None, "No Address", "pm_c_4444", 3),  # nobody to write to
    )
    messages = reminder_messages(due, load_templates(CardExpirySettings()), "billing@example.com")

    assert [(m.to, [c.payment_method_id for c in m.cards]) for m in messages] == [
        ("ada@example.com", ["pm_a_2222", "pm_a_3333"]),
        ("bo@example.com", ["pm_b_1111"]),
    ]
    assert messages[0].body.startswith("Hello Ada,")
    assert "2222" in messages[0].body
    assert "3333" in messages[0].body
    built = messages[0].as_message()
    assert built["To"] == "ada@example.com"
    assert built["From"] == "billing@example.com"
    assert built["Subject"] == messages[0].subject


def test_an_address_the_email_package_refuses_fails_alone_and_stays_out_of_the_summary(
    smtp_server: SmtpServer,
) -> None:
    injected = "eve@example.com\nBcc: everyone@example.com"
    due = _due(
        ("cus_a", "ada@example.com", "Ada", "pm_a_2222", 3),
        ("cus_e", injected, "Eve", "pm_e_5555", 3),
    )
    messages = reminder_messages(due, load_templates(CardExpirySettings()), "billing@example.com")
    memory = ReminderMemory(sa.create_engine("sqlite://"), "test")
    email = EmailSettings(
        sender="billing@example.com",
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        security="none",
        timeout_seconds=5,
    )

    outcome = send_reminders(messages, email, None, memory, run_id="r1", now=lambda: T0)

    assert (outcome.messages_sent, outcome.failed) == (1, 1)
    assert [r.rcpt_tos for r in smtp_server.received] == [["ada@example.com"]]
    assert outcome.first_error is not None
    assert "eve" not in outcome.first_error
    # Only the reminder that went out is remembered; Eve's is due again next run.
    assert memory.history(["pm_a_2222", "pm_e_5555"])["payment_method_id"].tolist() == [
        "pm_a_2222"
    ]
