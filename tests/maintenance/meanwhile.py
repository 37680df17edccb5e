"""Changing the world while a run is under way: what a person or the app does meanwhile.

The changes go straight into the sandbox's store and the users table, as the dashboard
or the application would make them; the run sees them through real HTTP and SQL.
`DeletingGateway` is the one hook into a run: a real gateway that deletes a customer in
the sandbox just before its own per-customer call, the moment a scan would meet it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import sqlalchemy as sa

from reconcile.settings import Settings
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter import RequestLimiter
from sandbox.runner import SandboxServer
from tests.maintenance.world import T0, USERS, MaintenanceWorld

NON_TERMINAL_STATUSES = ("active", "trialing", "past_due", "unpaid", "incomplete", "paused")
TERMINAL_STATUSES = ("canceled", "incomplete_expired")
BANK_METHODS = ("sepa_debit", "us_bank_account")


def add_idle_duplicates(world: MaintenanceWorld, *customer_ids: str) -> None:
    """More customers with user 7's email and nothing attached: each one a safe delete."""
    world.sandbox.store.bulk_load(
        world.mode,
        [
            {"id": cid, "created": T0 + (20 + n) * 60, "email": "u7@example.com", "metadata": {}}
            for n, cid in enumerate(customer_ids)
        ],
    )


def add_bank_method(world: MaintenanceWorld, customer_id: str, kind: str) -> None:
    details: dict[str, Any] = {"last4": "3000", "fingerprint": f"fp-{kind}-{customer_id}"}
    if kind == "sepa_debit":
        details.update(bank_code="37040044", country="DE")
    else:
        details.update(routing_number="110000000", account_type="checking")
    store = world.sandbox.store
    with store.lock:
        store.mode(world.mode).add_payment_method(
            {"type": kind, kind: details, "customer": customer_id}
        )


def add_subscription(world: MaintenanceWorld, customer_id: str, status: str) -> None:
    world.sandbox.store.add_subscription(world.mode, customer_id, status)


def set_balance(world: MaintenanceWorld, customer_id: str, balance: int) -> None:
    store = world.sandbox.store
    with store.lock:
        data = store.mode(world.mode)
        data.update_customer(data.customers[customer_id], {"balance": balance})


class _HasUsersTable(Protocol):
    users_url: str


def set_user(world: _HasUsersTable, user_id: int, **values: Any) -> None:
    """An UPDATE of one user row, as the application would make it."""
    engine = sa.create_engine(world.users_url)
    try:
        with engine.begin() as conn:
            conn.execute(USERS.update().where(USERS.c.id == user_id).values(**values))
    finally:
        engine.dispose()


def on_action(number: int, change: Callable[[], None]) -> Callable[[int], None]:
    """An `after_action` option: `change()` once the `number`-th action is done."""

    def after_action(attempted: int) -> None:
        if attempted == number:
            change()

    return after_action


class DeletingGateway(StripeGateway):
    """Deletes each doomed customer in the sandbox just before its first payment-method
    listing: deleted after the run listed it, before the run's call for it."""

    def __init__(self, sandbox: SandboxServer, mode: str, doomed: Iterable[str], **kw: Any):
        super().__init__(**kw)
        self._sandbox = sandbox
        self._mode = mode
        self.doomed = set(doomed)
        self.deleted: list[str] = []

    def list_payment_methods(
        self, customer_id: str, *, type: str | None = "card"
    ) -> Iterator[dict[str, Any]]:
        if customer_id in self.doomed:
            self.doomed.discard(customer_id)
            self._sandbox.store.mark_deleted(self._mode, [customer_id])
            self.deleted.append(customer_id)
        return super().list_payment_methods(customer_id, type=type)


def deleting_gateway(
    sandbox: SandboxServer, doomed: Iterable[str], *, mode: str = "test"
) -> tuple[Callable[[Settings], StripeGateway], list[DeletingGateway]]:
    """A `gateway_factory` for `execute_job`, and the list the gateways it made go into."""
    made: list[DeletingGateway] = []
    ids = list(doomed)

    def factory(settings: Settings) -> StripeGateway:
        gateway = DeletingGateway(
            sandbox,
            mode,
            ids,
            api_key=settings.require_key(),
            api_base=settings.stripe.api_base,
            # The limiter's guarantees are its own tests' business; here it only costs time.
            limiter=RequestLimiter(2000, per_endpoint_limit=2000),
        )
        made.append(gateway)
        return gateway

    return factory, made
