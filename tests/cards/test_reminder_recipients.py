"""Who a card reminder goes to: exactly one plain address, never a soft-deleted user.

A reminder holds a name, a card's last four digits and its expiry. A user DB email such
as `victim@example.com, attacker@evil.example` must not send it to both: the reminder
fails alone, the run's other reminders go, and the address stays out of logs and summary.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
import structlog

from jobs.base import LeaseLostError
from jobs.delivery import after_run_hooks
from jobs.reminders import single_address
from reconcile.state.store import RunStatus, StateStore, locks_table
from tests.cards.conftest import SmtpServer
from tests.cards.helpers import run_card_expiry, with_email
from tests.maintenance.meanwhile import set_user
from tests.maintenance.world import USERS
from tests.seeded import SeededWorld

ATTACKER = "attacker@evil.example"
BAD_ADDRESSES = {
    "comma": f"victim@example.com, {ATTACKER}",
    "semicolon": f"victim@example.com; {ATTACKER}",
    "line break": f"victim@example.com\nBcc: {ATTACKER}",
    "two addresses": f"victim@example.com {ATTACKER}",
    "display name": f"Victim Person <{ATTACKER}>",
    "quoted display name": f'"victim@example.com" <{ATTACKER}>',
}


def _due(world: SeededWorld, smtp_server: SmtpServer) -> pd.DataFrame:
    settings = with_email(world.settings, smtp_server.host, smtp_server.port)
    dry = run_card_expiry(world, settings)
    return pd.read_csv(dry.run_dir / "reminders.csv", dtype=str, keep_default_na=False)


def _linked_users(world: SeededWorld) -> dict[str, int]:
    """customer id -> the user linked to it."""
    engine = sa.create_engine(world.users_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(USERS.c.stripe_customer_id, USERS.c.id)).all()
    finally:
        engine.dispose()
    return {str(customer): int(str(user)) for customer, user in rows if customer}


def _email_only_in_user_db(world: SeededWorld, customer_id: str, user_id: int, email: str) -> None:
    """The reminder address now comes from the user DB (Stripe's customer has none)."""
    store = world.sandbox.store.mode("test")
    store.update_customer(store.customers[customer_id], {"email": None})
    set_user(world, user_id, email=email)


@pytest.mark.parametrize("value", list(BAD_ADDRESSES.values()), ids=list(BAD_ADDRESSES))
def test_a_value_that_is_not_one_plain_address_fails_that_reminder_alone(
    world: SeededWorld, smtp_server: SmtpServer, value: str
) -> None:
    due = _due(world, smtp_server)
    links = _linked_users(world)
    target = next(c for c in due["customer_id"] if c in links)
    _email_only_in_user_db(world, target, links[target], value)
    settings = with_email(world.settings, smtp_server.host, smtp_server.port)

    with structlog.testing.capture_logs() as logs:
        outcome = run_card_expiry(world, settings, send=True)

    assert outcome.exit_code == 6
    assert outcome.result.failed_actions == 1
    received = smtp_server.received
    assert len(received) == due["customer_id"].nunique() - 1
    recipients = [address for mail in received for address in mail.rcpt_tos]
    assert len(recipients) == len(received)  # one address a message
    assert not [a for a in recipients if "evil.example" in a or a == "victim@example.com"]
    assert all(str(mail.message["To"]) == mail.rcpt_tos[0] for mail in received)
    summary_line = outcome.summary["reminders"]
    assert "1 failed" in summary_line
    assert "evil.example" not in summary_line
    assert "victim" not in summary_line
    assert "evil.example" not in repr(logs)
    assert "victim" not in repr(logs)
    # Not remembered: once the address is fixed, the next run sends it.
    set_user(world, links[target], email="fixed@example.com")
    smtp_server.received.clear()
    again = run_card_expiry(world, settings, send=True)
    assert again.exit_code == 0
    assert [mail.rcpt_tos for mail in smtp_server.received] == [["fixed@example.com"]]


@pytest.mark.parametrize(
    "value",
    [
        *BAD_ADDRESSES.values(),
        "victim@example.com,",
        "victim@example.com\r",
        "",
        "no-at-sign.example.com",
        "a@b@example.com",
        "victim@example.com (comment)",
        "victim@localhost",
    ],
)
def test_single_address_refuses_anything_but_one_plain_address(value: str) -> None:
    assert single_address(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "victim@example.com",
        "Priya.Wang210@posteo.example",
        "o'brien+cards@mail.example.co.uk",
        "zoë@exämple.de",
    ],
)
def test_single_address_keeps_a_plain_address(value: str) -> None:
    assert single_address(f" {value} ") == value


def test_soft_deleted_users_get_no_reminder_and_are_left_out_of_the_csv(
    world: SeededWorld, smtp_server: SmtpServer
) -> None:
    due = _due(world, smtp_server)
    links = _linked_users(world)
    linked = [c for c in due["customer_id"] if c in links]
    by_link, by_metadata = linked[0], linked[1]
    gone = datetime(2026, 9, 1, tzinfo=UTC)
    # Linked by its customer id column, soft-deleted.
    set_user(world, links[by_link], deleted_at=gone)
    # No longer linked, but the customer's metadata user id names a soft-deleted user.
    store = world.sandbox.store.mode("test")
    assert store.customers[by_metadata].metadata["user_id"] == str(links[by_metadata])
    set_user(world, links[by_metadata], deleted_at=gone, stripe_customer_id=None)
    addresses = set(due.loc[due["customer_id"].isin([by_link, by_metadata]), "email"])
    settings = with_email(world.settings, smtp_server.host, smtp_server.port)

    outcome = run_card_expiry(world, settings, send=True)

    assert outcome.exit_code == 0
    assert outcome.summary["reminder_customers_soft_deleted"] == 2
    reminders = pd.read_csv(outcome.run_dir / "reminders.csv", dtype=str, keep_default_na=False)
    assert not {by_link, by_metadata} & set(reminders["customer_id"])
    assert len(reminders) == len(due) - 2
    received = {address for mail in smtp_server.received for address in mail.rcpt_tos}
    assert len(smtp_server.received) == due["customer_id"].nunique() - 2
    assert not addresses & received


def test_a_customer_an_active_user_still_links_to_is_reminded(
    world: SeededWorld, smtp_server: SmtpServer
) -> None:
    due = _due(world, smtp_server)
    links = _linked_users(world)
    shared = next(c for c in due["customer_id"] if c in links)
    # A second, soft-deleted user also points at the customer: the active one still counts.
    engine = sa.create_engine(world.users_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                USERS.insert().values(
                    id=999_999,
                    email="gone@example.com",
                    name="Gone",
                    stripe_customer_id=shared,
                    deleted_at=datetime(2026, 9, 1, tzinfo=UTC),
                )
            )
    finally:
        engine.dispose()
    outcome = run_card_expiry(world, world.settings)
    assert outcome.summary["reminder_customers_soft_deleted"] == 0
    reminders = pd.read_csv(outcome.run_dir / "reminders.csv", dtype=str, keep_default_na=False)
    assert shared in set(reminders["customer_id"])


def test_a_lost_lease_stops_the_reminders_before_the_next_one(
    world: SeededWorld, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    due = _due(world, smtp_server)
    assert due["customer_id"].nunique() > 2
    state_url = world.settings.state.url
    accept = smtp_server.handler.handle_DATA

    async def taken_over_after_the_first(server: Any, session: Any, envelope: Any) -> str:
        reply = await accept(server, session, envelope)
        if len(smtp_server.received) == 1:
            # Another run takes the card-expiry lease over (ours expired while we stalled).
            engine = sa.create_engine(state_url)
            try:
                with engine.begin() as conn:
                    conn.execute(
                        locks_table.update()
                        .where(locks_table.c.job == "card-expiry")
                        .values(owner="another-run")
                    )
            finally:
                engine.dispose()
        return reply

    monkeypatch.setattr(smtp_server.handler, "handle_DATA", taken_over_after_the_first)
    settings = with_email(world.settings, smtp_server.host, smtp_server.port)

    with pytest.raises(LeaseLostError):
        run_card_expiry(world, settings, send=True, after_run=after_run_hooks(settings, False))

    assert len(smtp_server.received) == 1
    store = StateStore(state_url)
    try:
        # The dry run of `_due`, then this one, stopped as interrupted.
        statuses = sorted(run.status.value for run in store.list_runs("card-expiry"))
        assert statuses == [RunStatus.INTERRUPTED.value, RunStatus.SUCCEEDED.value]
        with store.engine.connect() as conn:
            remembered: int = conn.execute(
                sa.text("select count(*) from stripe_reconcile_reminders")
            ).scalar_one()
    finally:
        store.close()
    # The one reminder that went is remembered: the next run does not repeat it.
    assert remembered >= 1
