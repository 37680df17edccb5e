"""Property: whatever happens to the account between runs — creates, updates of email, name,
metadata and the default payment method, deletes, cards attached, detached and updated, with
events late, back-dated past others or listed again in the overlap — `--incremental` reports
exactly what `--full` reports, kind by kind and id by id, for reconcile and card-expiry."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.ratelimit import RateLimits
from sandbox.runner import SandboxConfig, SandboxServer
from tests.incremental.world import World, build_world, findings_by_kind

OVERLAP = 300
EMAILS = ("ada@example.com", "bob@example.com", "cy@example.com", "Ada@example.com")
NAMES = ("Ada", "Bob", None)
PLANS = ("pro", "free", "")
USER_IDS = ("1", "2", "3", "4", "")
TOKENS = ("pm_card_visa", "pm_card_mastercard", "pm_card_amex")


@dataclass
class Account:
    """What the test knows of the sandbox account, to pick targets for the next change."""

    customers: list[str] = field(default_factory=list)
    cards: dict[str, list[str]] = field(default_factory=dict)  # customer -> attached cards


# One change: its kind, and numbers the kind reads as it needs (which customer, which value).
change = st.tuples(
    st.sampled_from(
        (
            "create",
            "create",
            "email",
            "name",
            "metadata",
            "attach",
            "attach_default",
            "set_default",
            "detach",
            "card_updater",
            "card_update",
            "delete",
        )
    ),
    st.integers(0, 1000),
    st.integers(0, 1000),
    # How the change's events go wrong: on time, late, back-dated.
    st.sampled_from(("ok", "ok", "ok", "late", "backdated")),
    st.integers(1, OVERLAP // 2),
)
rounds = st.lists(st.lists(change, min_size=1, max_size=8), min_size=1, max_size=3)


def _pick(items: list[str], number: int) -> str | None:
    return items[number % len(items)] if items else None


def apply_change(world: World, account: Account, item: tuple[str, int, int, str, int]) -> None:
    kind, a, b, fault, seconds = item
    faults = world.sandbox.store.event_faults
    if fault == "late":
        faults.delay_next(seconds, count=3)
    elif fault == "backdated":
        faults.backdate_next(seconds, count=3)
    client = world.client
    customer = _pick(account.customers, a)
    try:
        if kind == "create" or customer is None:
            params: dict[str, Any] = {
                "email": EMAILS[a % len(EMAILS)],
                "metadata": {"user_id": USER_IDS[b % len(USER_IDS)] or "9", "plan": "pro"},
            }
            if NAMES[b % len(NAMES)]:
                params["name"] = NAMES[b % len(NAMES)]
            created = str(client.v1.customers.create(cast(Any, params)).id)
            account.customers.append(created)
            account.cards[created] = []
        elif kind == "email":
            client.v1.customers.update(customer, {"email": EMAILS[b % len(EMAILS)]})
        elif kind == "name":
            client.v1.customers.update(customer, {"name": NAMES[b % len(NAMES)] or ""})
        elif kind == "metadata":
            metadata = {"plan": PLANS[b % len(PLANS)], "user_id": USER_IDS[a % len(USER_IDS)]}
            client.v1.customers.update(customer, {"metadata": metadata})
        elif kind in ("attach", "attach_default"):
            attached = str(
                client.v1.payment_methods.attach(TOKENS[b % len(TOKENS)], {"customer": customer}).id
            )
            account.cards[customer].append(attached)
            if kind == "attach_default":
                client.v1.customers.update(
                    customer, {"invoice_settings": {"default_payment_method": attached}}
                )
        elif kind == "set_default":
            card = _pick(account.cards[customer], b)
            client.v1.customers.update(
                customer, {"invoice_settings": {"default_payment_method": card or ""}}
            )
        elif kind == "detach":
            card = _pick(account.cards[customer], b)
            if card is not None:
                client.v1.payment_methods.detach(card)
                account.cards[customer].remove(card)
        elif kind in ("card_updater", "card_update"):
            card = _pick(account.cards[customer], b)
            if card is not None:
                month = 1 + (a % 12)
                if kind == "card_updater":
                    # This year's cards: some expired, some expiring, some not yet.
                    year = world.now().year + (b % 2)
                    world.sandbox.store.update_card("test", card, exp_month=month, exp_year=year)
                else:
                    # Stripe refuses a past expiry from the API: next year's or later.
                    year = world.now().year + 1 + (b % 2)
                    client.v1.payment_methods.update(
                        card, {"card": {"exp_month": month, "exp_year": year}}
                    )
        elif kind == "delete":
            client.v1.customers.delete(customer)
            account.customers.remove(customer)
            account.cards.pop(customer, None)
    finally:
        # Faults not used up by this change's events do not leak into the next one.
        faults.clear()
    world.advance(1 + a % 7)


def users_for(account: Account) -> list[dict[str, Any]]:
    """Users linked to some customers (and to one that may be gone), with plans that may or
    may not match: every reconcile rule has something to find."""
    users = []
    for number, user_id in enumerate(("1", "2", "3", "4")):
        customer = _pick(account.customers, number * 3)
        users.append(
            {
                "id": user_id,
                "email": EMAILS[number % len(EMAILS)],
                "name": NAMES[number % len(NAMES)],
                "stripe_customer_id": customer if number != 3 else None,
                "plan": ("pro", "free")[number % 2],
                "deleted_at": None,
            }
        )
    return users


def compare_runs(world: World) -> None:
    # Late events arrive (they are at most OVERLAP / 2 late), and the listing's bound is
    # past every change.
    world.advance(OVERLAP)
    for job in ("reconcile", "card-expiry"):
        incremental = world.run(job, incremental=True)
        full = world.run(job, incremental=False)
        assert incremental.summary["listing"] == "incremental", incremental.summary
        assert full.summary["listing"] == "full"
        assert findings_by_kind(incremental) == findings_by_kind(full), job
        assert incremental.summary["customers_scanned"] == full.summary["customers_scanned"]
        if job == "card-expiry":
            assert incremental.summary["cards_scanned"] == full.summary["cards_scanned"]


class StoppedClock:
    """The sandbox's base time, moved only by the test: each example sees the same seconds."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def property_sandbox() -> Iterator[SandboxServer]:
    config = SandboxConfig(limits=RateLimits(enabled=False), clock=StoppedClock())
    with SandboxServer(config) as server:
        yield server


@settings(
    max_examples=int(os.environ.get("INCREMENTAL_EXAMPLES", "10")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(first=st.lists(change, min_size=1, max_size=6), later=rounds)
def test_incremental_findings_equal_full_findings(
    property_sandbox: SandboxServer,
    first: list[tuple[str, int, int, str, int]],
    later: list[list[tuple[str, int, int, str, int]]],
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        world = build_world(property_sandbox, Path(folder), overlap_seconds=OVERLAP)
        account = Account()
        for item in first:
            apply_change(world, account, item)
        world.set_users(users_for(account))
        world.advance(2)
        # The full listings that leave the mirrors.
        for job in ("reconcile", "card-expiry"):
            assert world.run(job, incremental=True).summary["listing"] == "full"
        for batch in later:
            for item in batch:
                apply_change(world, account, item)
            # A run between changes, while some events are still late: it must not spoil the
            # mirror for the runs after it (the late events land in their overlap).
            world.advance(2)
            world.run("reconcile", incremental=True)
            world.run("card-expiry", incremental=True)
            compare_runs(world)
