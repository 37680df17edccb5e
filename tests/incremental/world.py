"""An account built through the sandbox's API (so every change emits its events), a users
database beside it, and runs of reconcile and card-expiry on the sandbox's own clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
import stripe

from jobs.registry import JOBS
from jobs.runner import RunOutcome, execute_job
from reconcile.settings import Settings, StateSettings, load_settings
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter import RequestLimiter
from sandbox.runner import SandboxServer

TEST_KEY = "sk_test_" + "IncrementalKey1234abcd"

_metadata = sa.MetaData()
USERS = sa.Table(
    "users",
    _metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("email", sa.String),
    sa.Column("name", sa.String),
    sa.Column("stripe_customer_id", sa.String),
    sa.Column("deleted_at", sa.DateTime),
    sa.Column("plan", sa.String),
)


def fast_gateway(settings: Settings) -> StripeGateway:
    # Pacing is the limiter's own tests' business; here it only costs time.
    return StripeGateway(
        settings.require_key(),
        api_base=settings.stripe.api_base,
        limiter=RequestLimiter(5000, per_endpoint_limit=5000),
    )


@dataclass
class World:
    sandbox: SandboxServer
    settings: Settings
    users_url: str
    client: stripe.StripeClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = stripe.StripeClient(TEST_KEY, base_addresses={"api": self.sandbox.url})

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.sandbox.clock(), UTC)

    def advance(self, seconds: float) -> None:
        self.sandbox.clock.advance(seconds)

    def run(self, job: str, **options: Any) -> RunOutcome:
        opts: Mapping[str, Any] = options
        return execute_job(
            JOBS[job], self.settings, options=opts, now=self.now, gateway_factory=fast_gateway
        )

    def set_users(self, users: list[dict[str, Any]]) -> None:
        engine = sa.create_engine(self.users_url)
        try:
            _metadata.create_all(engine)
            with engine.begin() as conn:
                conn.execute(USERS.delete())
                if users:
                    conn.execute(USERS.insert(), users)
        finally:
            engine.dispose()


def build_world(sandbox: SandboxServer, tmp_path: Path, **incremental: Any) -> World:
    sandbox.store.reset()
    sandbox.store.event_faults.clear()
    users_url = f"sqlite:///{tmp_path / 'users.db'}"
    base = load_settings(None, env={"STRIPE_SECRET_KEY": TEST_KEY, "STRIPE_API_BASE": sandbox.url})
    settings = base.model_copy(
        update={
            "userdb": base.userdb.model_copy(update={"url": users_url}),
            "state": StateSettings(url=f"sqlite:///{tmp_path / 'state.db'}"),
            "reports": base.reports.model_copy(update={"out": tmp_path / "output"}),
            "incremental": base.incremental.model_copy(update=incremental),
        }
    )
    world = World(sandbox, settings, users_url)
    world.set_users([])
    return world


def finding_keys(outcome: RunOutcome) -> list[tuple[str, ...]]:
    """Every finding as its kind and ids, sorted: what `--incremental` must match."""
    frame: pd.DataFrame = outcome.findings
    columns = [c for c in ("kind", "customer_id", "user_id") if c in frame.columns]
    return sorted(tuple(str(v) for v in row) for row in frame[columns].itertuples(index=False))


def findings_by_kind(outcome: RunOutcome) -> dict[str, list[tuple[str, ...]]]:
    grouped: dict[str, list[tuple[str, ...]]] = {}
    for key in finding_keys(outcome):
        grouped.setdefault(key[0], []).append(key[1:])
    return grouped
