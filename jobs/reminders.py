"""Card reminders: which are due (pure), how they read (Jinja2), and sending them over SMTP.

The template gets `name`, `email`, `cards` (soonest first; each with brand, last4,
exp_month, exp_year, expires_on, days_left, is_default) and `card` (the first of them).
A card is reminded once per expiry; with `remind_again_after_days` set, once more after
that many days, never more than twice.

A reminder holds a name, a card's last four digits and its expiry, so it goes to exactly
one plain address (`single_address`) or nowhere, and never to a soft-deleted user's
customer (`without_soft_deleted`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconcile.errors import ConfigError, DeliveryError
from reconcile.logs import get_logger
from reconcile.settings import CardExpirySettings, EmailSettings

# pandas, Jinja2, the reminder memory and SMTP come in when first used: card-expiry's
# listing sends its first request while they are imported (tests/startup).
if TYPE_CHECKING:
    import jinja2
    import pandas as pd

    from reconcile.state.reminders_sent import ReminderMemory, SentReminder

__all__ = [
    "DEFAULT_TEMPLATE",
    "MAX_REMINDERS_PER_EXPIRY",
    "ReminderEmail",
    "ReminderTemplates",
    "SendOutcome",
    "due_reminders",
    "load_templates",
    "preview_table",
    "reminder_email_count",
    "reminder_messages",
    "send_reminders",
    "single_address",
    "without_soft_deleted",
]

log = get_logger(__name__)

DEFAULT_TEMPLATE = "card-reminder.txt.j2"
MAX_REMINDERS_PER_EXPIRY = 2
_KEY = ["payment_method_id", "exp_year", "exp_month"]
# One addr-spec and nothing else: no display name (`<`, `"`), no list (`,` `;`), no
# comment (`(`), no white space or line break (a header continuation), one `@`.
_ATOM = r"[^\s@,;:<>()\[\]\\\"\x00-\x1f\x7f]+"
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_SINGLE_ADDRESS = re.compile(rf"{_ATOM}@(?:{_LABEL}\.)+{_LABEL}")
_REFUSED_ADDRESS = (
    "a customer's email address was refused: it is not exactly one plain address "
    "(a second address, a comma, a semicolon, a line break or a display name)"
)
_SAMPLE_CARD = {
    "brand": "visa",
    "last4": "4242",
    "exp_month": 12,
    "exp_year": 2030,
    "expires_on": "2030-12-31",
    "days_left": 10,
    "is_default": True,
}


def single_address(value: str) -> str | None:
    """`value` if it is exactly one plain address (spaces around it trimmed), else None."""
    address = value.strip(" ")
    return address if _SINGLE_ADDRESS.fullmatch(address) else None


def without_soft_deleted(candidates: pd.DataFrame, users: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The reminder candidates whose person is not soft-deleted, and how many customers
    were left out.

    A customer that users link to (their customer id column) belongs to them: it is left
    out when every one of them is soft-deleted. An unlinked customer belongs to the user
    its metadata names (the candidates' `user_id`, see `reconcile.rules.cards.customer_people`).
    """
    if candidates.empty or users.empty or "deleted" not in users.columns:
        return candidates, 0
    deleted = users["deleted"].fillna(False).astype(bool)
    linked = users["customer_id"].notna()
    # As object arrays: pandas' isin on Arrow strings builds one Arrow scalar per value
    # looked for, which over a million users was most of the reminders phase.
    customer_id = users["customer_id"].to_numpy(dtype=object)
    active_links = customer_id[(linked & ~deleted).to_numpy()]
    deleted_links = customer_id[(linked & deleted).to_numpy()]
    deleted_user_ids = users.loc[deleted, "user_id"].dropna().to_numpy(dtype=object)
    customer_ids = candidates["customer_id"].astype(object)
    by_link = customer_ids.isin(deleted_links) & ~customer_ids.isin(active_links)
    unlinked = ~customer_ids.isin(customer_id[linked.to_numpy()])
    by_metadata = unlinked & candidates["user_id"].astype(object).isin(deleted_user_ids)
    gone = (by_link | by_metadata).fillna(False).to_numpy(dtype=bool)
    left_out = int(candidates.loc[gone, "customer_id"].nunique())
    return candidates[~gone].reset_index(drop=True), left_out


def due_reminders(
    candidates: pd.DataFrame,
    history: pd.DataFrame,
    now: datetime,
    remind_again_after_days: int | None,
) -> pd.DataFrame:
    """The candidates not yet reminded for this expiry, or due their one repeat."""
    import pandas as pd

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
    import jinja2

    return _environment(jinja2.PackageLoader("reports", "templates"))


def _environment(loader: jinja2.BaseLoader | None = None) -> jinja2.Environment:
    import jinja2

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
    import jinja2

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
    import pandas as pd

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
    import pandas as pd

    from reconcile.state.reminders_sent import SentReminder

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


def reminder_email_count(due: pd.DataFrame, templates: ReminderTemplates) -> int:
    """How many messages `reminder_messages` would make, for a dry run that only counts them.

    Rendering every message cost seconds over tens of thousands and a dry run shows none,
    so only the first customer's is rendered: a template that fails on real data (a name
    left empty, a filter a card's values refuse) still fails the dry run before a --send.
    """
    keyed = due[["customer_id", "email"]].dropna()
    if keyed.empty:
        return 0
    groups = keyed.astype(str).drop_duplicates()
    first = min(groups.itertuples(index=False, name=None))
    mask = (keyed["customer_id"].astype(str) == first[0]) & (keyed["email"].astype(str) == first[1])
    reminder_messages(due.loc[mask[mask].index], templates, sender="")
    return len(groups)


PREVIEW_COLUMNS = ("customer_id", "to", "subject", "body")


def preview_table(messages: list[ReminderEmail]) -> pd.DataFrame:
    """The messages as `--preview` shows them, one row each: what would be sent, to whom."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "customer_id": message.cards[0].customer_id if message.cards else "",
                "to": message.to,
                "subject": message.subject,
                "body": message.body,
            }
            for message in messages
        ],
        columns=list(PREVIEW_COLUMNS),
        dtype="object",
    )


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
    before_each: Callable[[], None] = lambda: None,
) -> SendOutcome:
    """Send each message and remember its cards at once, so a crash never repeats a reminder.

    `before_each` runs before every send (the job's lease check): what it raises ends the
    sending, with the reminders sent so far remembered.
    """
    from reports.email import smtp_session

    sent = cards = failed = 0
    first_error: str | None = None
    try:
        with smtp_session(email, password) as session:
            for reminder in messages:
                covered = reminder.cards
                address = single_address(reminder.to)
                try:
                    if address is None:
                        raise ValueError("not exactly one plain address")
                    message = reminder.as_message()
                except (ValueError, TypeError):
                    # An address that is not exactly one (a list, a display name, a line
                    # break) or that the email package refuses: that customer's reminder
                    # fails, the others go. The address stays out of the summary and the
                    # log (personal data).
                    failed += 1
                    first_error = first_error or _REFUSED_ADDRESS
                    log.warning("reminder not sent", reason="address refused")
                    continue
                before_each()
                try:
                    # The envelope names the one address: never what the headers might parse to.
                    session.send(message, recipients=[address])
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
