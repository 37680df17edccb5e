"""Card reminders: which are due (pure), how they read (Jinja2), and sending them over SMTP.

The template gets `name`, `email`, `cards` (soonest first; each with brand, last4,
exp_month, exp_year, expires_on, days_left, is_default) and `card` (the first of them).
A card is reminded once per expiry; with `remind_again_after_days` set, once more after
that many days, never more than twice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from jobs.reminder_memory import ReminderMemory, SentReminder
from reconcile.errors import ConfigError, DeliveryError
from reconcile.logs import get_logger
from reconcile.settings import CardExpirySettings, EmailSettings
from reports.email import smtp_session

__all__ = [
    "DEFAULT_TEMPLATE",
    "MAX_REMINDERS_PER_EXPIRY",
    "ReminderEmail",
    "ReminderTemplates",
    "SendOutcome",
    "due_reminders",
    "load_templates",
    "reminder_messages",
    "send_reminders",
]

log = get_logger(__name__)

DEFAULT_TEMPLATE = "card-reminder.txt.j2"
MAX_REMINDERS_PER_EXPIRY = 2
_KEY = ["payment_method_id", "exp_year", "exp_month"]
_SAMPLE_CARD = {
    "brand": "visa",
    "last4": "4242",
    "exp_month": 12,
    "exp_year": 2030,
    "expires_on": "2030-12-31",
    "days_left": 10,
    "is_default": True,
}


def due_reminders(
    candidates: pd.DataFrame,
    history: pd.DataFrame,
    now: datetime,
    remind_again_after_days: int | None,
) -> pd.DataFrame:
    """The candidates not yet reminded for this expiry, or due their one repeat."""
    if candidates.empty or history.empty:
        return candidates
    ints = {"exp_year": "int64", "exp_month": "int64"}
    merged = candidates.astype(ints).merge(history.astype(ints), on=_KEY, how="left")
    never = merged["times_sent"].isna()
    due = never
    if remind_again_after_days is not None:
        since = pd.Timestamp(now) - pd.to_datetime(merged["last_sent_at"], utc=True)
        again = (merged["times_sent"] < MAX_REMINDERS_PER_EXPIRY) & (
            since >= pd.Timedelta(timedelta(days=remind_again_after_days))
        )
        due = never | again.fillna(False)
    return candidates[due.to_numpy()].reset_index(drop=True)


@dataclass(frozen=True)
class ReminderTemplates:
    subject: jinja2.Template
    body: jinja2.Template

    def render(self, name: str | None, email: str, cards: list[dict[str, Any]]) -> tuple[str, str]:
        context = {"name": name, "email": email, "cards": cards, "card": cards[0]}
        subject = " ".join(self.subject.render(context).split())
        return subject, self.body.render(context).strip() + "\n"


@functools.cache
def _package_environment() -> jinja2.Environment:
    return _environment(jinja2.PackageLoader("reports", "templates"))


def _environment(loader: jinja2.BaseLoader | None = None) -> jinja2.Environment:
    # Plain-text mail: no HTML escaping; StrictUndefined turns a typo into an error now.
    return jinja2.Environment(
        loader=loader,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def load_templates(settings: CardExpirySettings) -> ReminderTemplates:
    """The configured (or shipped) templates, tried once on a sample: ConfigError if broken."""
    path = settings.reminder_template
    try:
        if path is None:
            body = _package_environment().get_template(DEFAULT_TEMPLATE)
        else:
            body = _environment().from_string(Path(path).read_text(encoding="utf-8"))
        subject = _environment().from_string(settings.subject)
        templates = ReminderTemplates(subject, body)
        templates.render("Ada Lovelace", "ada@example.com", [dict(_SAMPLE_CARD)])
    except OSError as exc:
        raise ConfigError(
            f"[card_expiry] reminder_template {path}: cannot be read ({exc.strerror}); "
            "point it at a Jinja2 text file or leave it out for the default"
        ) from None
    except jinja2.TemplateError as exc:
        where = "subject" if path is None or "subject" in str(exc) else f"reminder_template {path}"
        raise ConfigError(
            f"[card_expiry] {where}: the template does not render ({exc}); variables are "
            "name, email, cards and card (brand, last4, exp_month, exp_year, expires_on, "
            "days_left, is_default)"
        ) from None
    return templates


def _card_context(row: Mapping[Hashable, Any]) -> dict[str, Any]:
    return {
        "brand": row["brand"] if pd.notna(row["brand"]) else "card",
        "last4": row["last4"] if pd.notna(row["last4"]) else "????",
        "exp_month": int(row["exp_month"]),
        "exp_year": int(row["exp_year"]),
        "expires_on": str(row["expires_on"]),
        "days_left": int(row["days_left"]),
        "is_default": bool(row["is_default"]),
    }


@dataclass(frozen=True)
class ReminderEmail:
    """One customer's reminder, rendered: the message is built only when it is sent (the
    email package takes a millisecond a message, seconds for a dry run of thousands)."""

    sender: str
    to: str
    subject: str
    body: str
    cards: list[SentReminder]

    def as_message(self) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = self.subject
        message["From"] = self.sender
        message["To"] = self.to
        message.set_content(self.body)
        return message


def reminder_messages(
    due: pd.DataFrame, templates: ReminderTemplates, sender: str
) -> list[ReminderEmail]:
    """One message per customer (all their due cards in it), by customer id then email."""
    # Grouped in plain Python over the records: a DataFrame per customer cost seconds.
    groups: dict[tuple[str, str], list[dict[Hashable, Any]]] = {}
    for row in due.to_dict("records"):
        customer_id, email = row["customer_id"], row["email"]
        if pd.isna(customer_id) or pd.isna(email):
            continue
        groups.setdefault((str(customer_id), str(email)), []).append(row)
    out: list[ReminderEmail] = []
    for (customer_id, email), rows in sorted(groups.items(), key=lambda item: item[0]):
        name = next((r["name"] for r in rows if pd.notna(r["name"])), None)
        subject, body = templates.render(name, email, [_card_context(r) for r in rows])
        cards = [
            SentReminder(
                str(r["payment_method_id"]),
                customer_id,
                int(r["exp_year"]),
                int(r["exp_month"]),
            )
            for r in rows
        ]
        out.append(ReminderEmail(sender, email, subject, body, cards))
    return out


@dataclass(frozen=True)
class SendOutcome:
    messages_sent: int
    cards_reminded: int
    failed: int
    first_error: str | None


def send_reminders(
    messages: list[ReminderEmail],
    email: EmailSettings,
    password: str | None,
    memory: ReminderMemory,
    *,
    run_id: str,
    now: Callable[[], datetime],
) -> SendOutcome:
    """Send each message and remember its cards at once, so a crash never repeats a reminder."""
    sent = cards = failed = 0
    first_error: str | None = None
    try:
        with smtp_session(email, password) as session:
            for reminder in messages:
                covered = reminder.cards
                try:
                    message = reminder.as_message()
                except (ValueError, TypeError):
                    # An address the email package refuses (a line break, say): that
                    # customer's reminder fails, the others go. The address stays out of
                    # the summary and the log (personal data).
                    failed += 1
                    first_error = first_error or (
                        "a customer's email address was refused by the email package "
                        "(a line break or a character a header cannot hold)"
                    )
                    log.warning("reminder not sent", reason="address refused")
                    continue
                try:
                    session.send(message)
                except DeliveryError as exc:
                    failed += 1
                    first_error = first_error or exc.message
                    log.warning("reminder not sent", reason=exc.message)
                    continue
                at = now()
                for card in covered:
                    memory.record(card, at=at, run_id=run_id)
                sent += 1
                cards += len(covered)
    except DeliveryError as exc:  # the session itself: nothing further can be sent
        failed = len(messages) - sent
        first_error = first_error or exc.message
        log.error("reminders not sent", reason=exc.message)
    return SendOutcome(sent, cards, failed, first_error)
