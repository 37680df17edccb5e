"""Putting a generated account into a running sandbox's store.

Kept apart from the server (which serves it) and the generator (which builds it) so
neither imports the other: the server's admin "seed" route and the runner call this,
and this calls both the generator and the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sandbox.history import add_seeded_history
from sandbox.store import SandboxStore

if TYPE_CHECKING:
    from sandbox.seed import SeededAccount

__all__ = ["load_account", "load_into_sandbox", "seed_store"]


def load_account(store: SandboxStore, mode: str, account: SeededAccount) -> tuple[int, int]:
    """Load a `SeededAccount`: its customers and cards into `mode`, its deleted customers
    marked deleted, its live-mode customers (if any) into the other mode, each mode with
    the last 30 days of events such an account has (history.py)."""
    deleted = list(account.deleted_customer_ids)
    store.bulk_load(mode, account.customers, account.payment_methods)
    with store.lock:
        data = store.mode(mode)
        with data.events.suspended():  # the history below dates these deletions
            store.mark_deleted(mode, deleted)
        add_seeded_history(
            data, account.customers, account.payment_methods, deleted, seed=account.seed
        )
    other = account.live_customers
    if other:
        other_mode = "live" if mode == "test" else "test"
        store.bulk_load(other_mode, other)
        with store.lock:
            add_seeded_history(store.mode(other_mode), other, (), (), seed=account.seed)
    return len(account.customers), len(account.payment_methods)


def load_into_sandbox(store: SandboxStore, account: SeededAccount) -> tuple[int, int]:
    """Load the account into a sandbox store: test mode, deleted ids marked, live customers.

    Returns (customers, payment methods) loaded into test mode.
    """
    return load_account(store, "test", account)


def seed_store(store: SandboxStore, mode: str, customers: int, *, seed: int = 0) -> tuple[int, int]:
    """Seed `mode` with the project's generator; returns (customers, payment methods) added."""
    # The generator imports pandas: a sandbox that is never seeded starts without it.
    from sandbox.seed import generate_account

    account = generate_account(customers, seed=seed, now=int(store.clock()))
    return load_account(store, mode, account)
