"""A small hand-made account and users table in which every maintenance job has work.

| user | customer | for |
| --- | --- | --- |
| 1 | cus_sync1 (plan free) | sync-metadata: plan -> pro |
| 2 | cus_sync2 (plan team) | sync-metadata: plan deleted (column NULL) |
| 3 | cus_big (50 keys, no plan) | sync-metadata: skipped, a 51st key breaks the limit |
| 4 | cus_un4 (metadata user_id 4) | link-users: link by metadata |
| 5 | cus_un5 (same email, other case) | link-users: link by email |
| 6 | none | link-users --create-missing: created, then linked |
| 7 | cus_dupA, cus_dupB, cus_dupC (same email) | dedupe: A canonical, B deleted, C tagged |
| 8, 9 (soft-deleted) | cus_gone8, cus_gone9 | gdpr-delete |
| 10 | cus_pm10 (two valid cards) | default-payment-method: the newer card |
| 11 | cus_pm11 (one valid card) | default-payment-method |
| 12 | cus_pm12 (only an expired card) | default-payment-method: skipped |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from jobs.base import JobResult
from jobs.registry import JOBS
from jobs.runner import RunOutcome, execute_job
from reconcile.settings import Settings, StateSettings, load_settings
from sandbox.requestlog import RequestRecord
from sandbox.runner import SandboxServer

TEST_KEY = "sk_test_" + "MaintenanceKey1234abcd"
LIVE_KEY = "sk_live_" + "MaintenanceKey1234abcd"
T0 = 1_700_000_000

USERS = sa.Table(
    "users",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("email", sa.String(320)),
    sa.Column("name", sa.String(200)),
    sa.Column("plan", sa.String(40)),
    sa.Column("stripe_customer_id", sa.String(64)),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
)


def _customer(cid: str, n: int, uid: str | None = None, **fields: Any) -> dict[str, Any]:
    metadata = dict(fields.pop("metadata", {}))
    if uid is not None:
        metadata.setdefault("user_id", uid)
    return {"id": cid, "created": T0 + n * 60, "metadata": metadata, **fields}


def _user(uid: int, customer: str | None, plan: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": uid,
        "email": fields.pop("email", f"u{uid}@example.com"),
        "name": fields.pop("name", f"User {uid}"),
        "plan": plan,
        "stripe_customer_id": customer,
        "deleted_at": fields.pop("deleted_at", None),
    }


def customers() -> list[dict[str, Any]]:
    big = {f"k{i}": "v" for i in range(49)}
    return [
        _customer(
            "cus_sync1", 1, "1", email="u1@example.com", name="User 1", metadata={"plan": "free"}
        ),
        _customer(
            "cus_sync2", 2, "2", email="u2@example.com", name="User 2", metadata={"plan": "team"}
        ),
        _customer("cus_big", 3, "3", email="u3@example.com", name="User 3", metadata=big),
        _customer(
            "cus_un4", 4, "4", email="other4@example.com", name="User 4", metadata={"plan": "pro"}
        ),
        _customer("cus_un5", 5, None, email="u5@example.com", name="User 5"),
        _customer(
            "cus_dupA", 6, "7", email="u7@example.com", name="User 7", metadata={"plan": "pro"}
        ),
        _customer("cus_dupB", 7, None, email="u7@example.com"),
        _customer("cus_dupC", 8, None, email="U7@example.com", default_payment_method="pm_c"),
        _customer("cus_gone8", 9, "8", email="u8@example.com", name="User 8"),
        _customer("cus_gone9", 10, "9", email="u9@example.com", name="User 9"),
        _customer(
            "cus_pm10", 11, "10", email="u10@example.com", name="User 10", metadata={"plan": "pro"}
        ),
        _customer(
            "cus_pm11", 12, "11", email="u11@example.com", name="User 11", metadata={"plan": "pro"}
        ),
        _customer(
            "cus_pm12", 13, "12", email="u12@example.com", name="User 12", metadata={"plan": "pro"}
        ),
    ]


def _card(pm: str, customer: str, n: int, exp_year: int, last4: str) -> dict[str, Any]:
    card = {
        "brand": "visa",
        "last4": last4,
        "exp_month": 6,
        "exp_year": exp_year,
        "fingerprint": f"fp{last4}",
    }
    return {"id": pm, "created": T0 + n * 60, "customer": customer, "card": card}


def payment_methods() -> list[dict[str, Any]]:
    return [
        _card("pm_c", "cus_dupC", 20, 2031, "1111"),
        _card("pm_10_old", "cus_pm10", 21, 2030, "2222"),
        _card("pm_10_new", "cus_pm10", 22, 2032, "3333"),
        _card("pm_11", "cus_pm11", 23, 2031, "4444"),
        _card("pm_12_expired", "cus_pm12", 24, 2020, "5555"),
    ]


def users() -> list[dict[str, Any]]:
    gone = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        _user(1, "cus_sync1", "pro"),
        _user(2, "cus_sync2", None),
        _user(3, "cus_big", "pro"),
        _user(4, None, "pro"),
        _user(5, None, email="U5@Example.com"),
        _user(6, None, name="User Six"),
        _user(7, "cus_dupA", "pro"),
        _user(8, "cus_gone8", deleted_at=gone),
        _user(9, "cus_gone9", deleted_at=gone),
        _user(10, "cus_pm10", "pro"),
        _user(11, "cus_pm11", "pro"),
        _user(12, "cus_pm12", "pro"),
    ]


@dataclass
class MaintenanceWorld:
    sandbox: SandboxServer
    settings: Settings
    users_url: str
    mode: str

    def customer(self, customer_id: str) -> Any:
        record = self.sandbox.store.customer(self.mode, customer_id)
        return None if record is None or record.deleted else record

    def live_customers(self) -> list[Any]:
        store = self.sandbox.store.mode(self.mode)
        return [r for r in store.customers.values() if not r.deleted]

    def links(self) -> dict[int, str | None]:
        engine = sa.create_engine(self.users_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.select(USERS.c.id, USERS.c.stripe_customer_id)).all()
        finally:
            engine.dispose()
        return {int(row[0]): row[1] for row in rows}

    def writes(self) -> list[RequestRecord]:
        return [r for r in self.sandbox.request_log.entries() if r.method in ("POST", "DELETE")]

    def run(self, job: str, **options: Any) -> RunOutcome:
        return execute_job(JOBS[job], self.settings, options=options)


def build(
    sandbox: SandboxServer, tmp_path: Path, users_url: str, *, mode: str = "test"
) -> MaintenanceWorld:
    sandbox.store.reset()
    sandbox.request_log.clear()
    sandbox.store.bulk_load(mode, customers(), payment_methods())
    engine = sa.create_engine(users_url)
    try:
        USERS.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(USERS.insert(), users())
    finally:
        engine.dispose()
    key = LIVE_KEY if mode == "live" else TEST_KEY
    base = load_settings(None, env={"STRIPE_SECRET_KEY": key, "STRIPE_API_BASE": sandbox.url})
    settings = base.model_copy(
        update={
            "userdb": base.userdb.model_copy(update={"url": users_url}),
            "state": StateSettings(url=f"sqlite:///{tmp_path / 'state.db'}"),
            "reports": base.reports.model_copy(update={"out": tmp_path / "output"}),
        }
    )
    return MaintenanceWorld(sandbox, settings, users_url, mode)


def facts(outcome: RunOutcome) -> Mapping[str, Any]:
    result: JobResult = outcome.result
    return result.facts
