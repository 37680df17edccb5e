"""`[email] include_personal_data = false`: no attachment of any job carries an email or a name.

plan.csv and audit.csv hold them inside JSON cells (`params`, `before`, `after`), for
instance the customer link-users creates, or a name sync-metadata writes.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from jobs.delivery import after_run_hooks
from jobs.registry import JOBS
from jobs.runner import execute_job
from reports.email import REDACTED, strip_personal_data
from sandbox.runner import SandboxServer
from tests.cards.conftest import SmtpServer
from tests.cards.helpers import with_email
from tests.maintenance.world import USERS, MaintenanceWorld, build

# Every job that writes reports, with the options that give each its most personal plan.
RUNS: list[tuple[str, dict[str, Any]]] = [
    ("reconcile", {}),
    ("sync-metadata", {"apply": True}),
    ("link-users", {"apply": True, "create_missing": True}),
    ("dedupe", {"apply": True}),
    ("gdpr-delete", {"apply": True}),
    ("default-payment-method", {"apply": True}),
    ("card-expiry", {"days": 36500}),
]


def _distinct_name(name: str) -> str:
    # "User 1" would also match "User 10" and sentences such as "User 1 points at ...".
    return f"Ottoline {name.split()[-1]} Quarrington"


@pytest.fixture
def world(sandbox_server: SandboxServer, tmp_path: Path) -> MaintenanceWorld:
    built = build(sandbox_server, tmp_path, f"sqlite:///{tmp_path / 'users.db'}")
    store = built.sandbox.store.mode(built.mode)
    for record in list(store.customers.values()):
        if record.name:
            store.update_customer(record, {"name": _distinct_name(record.name)})
    # cus_pm12's expired card as its default: a reminder row with a name and an email.
    store.update_customer(store.customers["cus_pm12"], {"default_payment_method": "pm_12_expired"})
    engine = sa.create_engine(built.users_url)
    try:
        with engine.begin() as conn:
            for uid, name in conn.execute(sa.select(USERS.c.id, USERS.c.name)).all():
                conn.execute(
                    USERS.update().where(USERS.c.id == uid).values(name=_distinct_name(str(name)))
                )
            # sync-metadata plans (and audits) a new name and a new email over the old ones.
            conn.execute(USERS.update().where(USERS.c.id == 1).values(name="Ottoline Renamed"))
            conn.execute(USERS.update().where(USERS.c.id == 2).values(email="moved2@example.com"))
    finally:
        engine.dispose()
    return built


def _people(world: MaintenanceWorld) -> tuple[set[str], set[str]]:
    """Every email (lower-cased) and name the world holds, on either side."""
    store = world.sandbox.store.mode(world.mode)
    emails = {r.email.lower() for r in store.customers.values() if r.email}
    names = {r.name for r in store.customers.values() if r.name}
    engine = sa.create_engine(world.users_url)
    try:
        with engine.connect() as conn:
            for email, name in conn.execute(sa.select(USERS.c.email, USERS.c.name)).all():
                emails.add(str(email).lower())
                names.add(str(name))
    finally:
        engine.dispose()
    return emails, names


def _attached_files(message: Any) -> Iterator[tuple[str, bytes]]:
    for part in message.iter_attachments():
        name, data = part.get_filename(), part.get_payload(decode=True)
        if name.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for inner in archive.namelist():
                    yield inner, archive.read(inner)
        else:
            yield name, data


def test_no_attachment_of_any_job_holds_an_email_or_a_name(
    world: MaintenanceWorld, smtp_server: SmtpServer
) -> None:
    emails, names = _people(world)
    settings = with_email(
        world.settings, smtp_server.host, smtp_server.port, include_personal_data=False
    )
    syncing = settings.maintenance.model_copy(update={"sync_name": True, "sync_email": True})
    settings = settings.model_copy(update={"maintenance": syncing})
    run_dirs = []
    for job, options in RUNS:
        outcome = execute_job(
            JOBS[job], settings, options=options, after_run=after_run_hooks(settings, True)
        )
        run_dirs.append(outcome.run_dir)
    assert len(smtp_server.received) == len(RUNS)

    attached: dict[str, bytes] = {}
    for mail in smtp_server.received:
        for name, data in _attached_files(mail.message):
            attached[f"{mail.message['Subject']} {name}"] = data
    kinds = {key.rsplit(" ", 1)[1] for key in attached}
    assert {"plan.csv", "audit.csv", "reminders.csv", "findings.csv"} <= kinds
    for key, data in attached.items():
        text = data.decode("utf-8")
        leaked_emails = [e for e in emails if e in text.lower()]
        leaked_names = [n for n in names if n in text]
        assert leaked_emails == [], key
        assert leaked_names == [], key
        assert "@" not in text, key

    # The personal data was there to leave out: the files on disk keep it.
    on_disk = "".join(
        path.read_text(encoding="utf-8") for run_dir in run_dirs for path in run_dir.glob("*.csv")
    )
    assert "u6@example.com" in on_disk  # the customer link-users created
    plans = [pd.read_csv(d / "plan.csv", dtype=str) for d in run_dirs if (d / "plan.csv").exists()]
    synced = {json.loads(p)["name"] for plan in plans for p in plan["params"] if "name" in p}
    assert "Ottoline Renamed" in synced  # the name sync-metadata wrote


def test_json_cells_lose_email_and_name_keys_and_addresses_in_values() -> None:
    params = {
        "email": "u6@example.com",
        "name": "Ada Lovelace",
        "metadata": {"user_id": "6", "contact": "write to ada@example.org", "plan": "pro"},
    }
    table = pd.DataFrame(
        {
            "action": ["create_customer_and_link"],
            "params": [json.dumps(params)],
            "before": ["{}"],
            "reason": ["user 6 (ada@example.org) has no Stripe customer"],
        }
    )
    stripped = pd.read_csv(
        io.BytesIO(strip_personal_data(table.to_csv(index=False).encode())),
        dtype=str,
        keep_default_na=False,
    )
    assert json.loads(str(stripped.loc[0, "params"])) == {
        "metadata": {"user_id": "6", "contact": f"write to {REDACTED}", "plan": "pro"}
    }
    assert stripped.loc[0, "before"] == "{}"
    assert stripped.loc[0, "reason"] == f"user 6 ({REDACTED}) has no Stripe customer"
