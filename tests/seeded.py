"""A seeded sandbox and a matching users database, for the end-to-end and CLI tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconcile.settings import Settings, StateSettings, load_settings
from sandbox.loading import load_into_sandbox
from sandbox.runner import SandboxServer
from sandbox.seed import (
    SeededAccount,
    generate_account,
    write_users_db,
)

TEST_KEY = "sk_test_" + "IntegrationKey1234abcd"
NOW = 1_790_000_000  # 2026-09-21, fixed so the seeded account never changes


@dataclass
class SeededWorld:
    sandbox: SandboxServer
    account: SeededAccount
    users_url: str
    settings: Settings


def build_world(
    sandbox: SandboxServer, tmp_path: Path, users_url: str, *, seed: int, customers: int = 400
) -> SeededWorld:
    sandbox.store.reset()
    sandbox.request_log.clear()
    # The sandbox serves every test of a worker: an earlier test's requests in the last
    # second must not have this world's refused (a 429 adds a retry line to the output).
    sandbox.state.limiter.clear()
    account = generate_account(customers, seed=seed, now=NOW)
    load_into_sandbox(sandbox.store, account)
    write_users_db(account, users_url)
    base = load_settings(None, env={"STRIPE_SECRET_KEY": TEST_KEY, "STRIPE_API_BASE": sandbox.url})
    settings = base.model_copy(
        update={
            "userdb": base.userdb.model_copy(update={"url": users_url, "scope": {"env": "prod"}}),
            "state": StateSettings(url=f"sqlite:///{tmp_path / 'state.db'}"),
            "reports": base.reports.model_copy(update={"out": tmp_path / "output"}),
        }
    )
    return SeededWorld(sandbox, account, users_url, settings)
