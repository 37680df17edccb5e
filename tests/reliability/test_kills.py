"""SIGKILL during `run link-users --create-missing --apply`, at ten points, then a rerun.

The console script runs in its own process against the session sandbox (with latency, so
a kill lands mid-run); the test watches the sandbox's request log and kills the process
right after its next customer is created. Ten kills, one rerun to the end; then the
account and the users table equal the dry run's plan, no user got two customers, and the
audit log holds every write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from jobs.registry import JOBS
from sandbox.runner import SandboxServer
from tests.reliability.helpers import base_sections, write_config
from tests.seeded import TEST_KEY, SeededWorld

pytestmark = pytest.mark.skipif(
    "link-users" not in JOBS, reason="needs the link-users job (issue 5)"
)

SCRIPT = Path(sys.executable).with_name("stripe-reconcile")
NEW_USERS = 14
KILLS = 10


def add_unmatched_users(users_url: str) -> list[str]:
    engine = sa.create_engine(users_url)
    ids = [str(900_000 + n) for n in range(NEW_USERS)]
    with engine.begin() as conn:
        for user_id in ids:
            conn.execute(
                sa.text(
                    "insert into users (id, email, name, plan) values (:id, :email, :name, 'pro')"
                ),
                {
                    "id": int(user_id),
                    "email": f"new{user_id}@example.org",
                    "name": f"New {user_id}",
                },
            )
    engine.dispose()
    return ids


def creates(sandbox: SandboxServer) -> list[str | None]:
    return [
        e.idempotency_key
        for e in sandbox.request_log.entries()
        if e.method == "POST" and e.path == "/v1/customers" and e.status == 200
    ]


def links(users_url: str) -> dict[str, str]:
    engine = sa.create_engine(users_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select id, stripe_customer_id from users")).all()
    engine.dispose()
    return {str(r[0]): r[1] for r in rows if r[1]}


def test_ten_kills_then_a_rerun_reach_the_planned_state_once(
    small_world: SeededWorld, tmp_path: Path
) -> None:
    sandbox, users_url = small_world.sandbox, small_world.users_url
    new_ids = add_unmatched_users(users_url)
    sections = base_sections(small_world, tmp_path / "out")
    config = write_config(tmp_path / "config.toml", sections)
    env = {
        **os.environ,
        "STRIPE_SECRET_KEY": TEST_KEY,
        "STRIPE_API_BASE": sandbox.url,
        "STRIPE_RECONCILE_CONFIG": "",
    }
    command = [str(SCRIPT), "run", "link-users", "--create-missing", "--config", str(config)]

    dry = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    plan = pd.read_csv(
        Path(dry.stdout.strip().splitlines()[-1]) / "plan.csv", dtype=str, keep_default_na=False
    )
    planned = plan[plan["action"] != "skip"]
    to_create = set(planned.loc[planned["action"].str.startswith("create"), "user_id"])
    to_link = dict(
        zip(
            planned.loc[planned["action"] == "link_user", "user_id"],
            planned.loc[planned["action"] == "link_user", "customer_id"],
            strict=True,
        )
    )
    assert set(new_ids) <= to_create
    assert links(users_url).keys().isdisjoint(to_create | set(to_link))

    with sandbox.store.lock:
        existing = set(sandbox.store.mode("test").customers)
    # Each write takes a while, so the kill lands mid-run, after one create: on a busy
    # machine this test's polling lags, and at 40 ms several creates came before a kill,
    # leaving too few for ten kills at ten points.
    sandbox.latency_ms = 120
    killed_at: list[int] = []
    try:
        for _ in range(KILLS):
            before = len(creates(sandbox))
            process = subprocess.Popen(
                [*command, "--apply", "--max-changes", "1000"], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + 60
            while len(creates(sandbox)) == before and process.poll() is None:
                assert time.monotonic() < deadline, "no customer created within 60 s"
                time.sleep(0.005)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                killed_at.append(len(creates(sandbox)))
            process.wait(timeout=30)
    finally:
        sandbox.latency_ms = 0
    assert len(killed_at) == KILLS, killed_at
    assert len(set(killed_at)) == KILLS  # ten different points of the plan

    rerun = subprocess.run(
        [*command, "--apply", "--max-changes", "1000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr

    # The planned end state: every planned link written, one customer per created user.
    linked = links(users_url)
    for user_id, customer_id in to_link.items():
        assert linked.get(user_id) == customer_id
    with sandbox.store.lock:
        customers = [
            c
            for c in sandbox.store.mode("test").customers.values()
            if not c.deleted and c.id not in existing
        ]
        by_user: dict[str, list[str]] = {}
        for c in customers:
            by_user.setdefault(c.metadata.get("user_id", ""), []).append(c.id)
    assert len(customers) == len(to_create)  # nothing else was created
    for user_id in to_create:
        assert len(by_user.get(user_id, [])) == 1, (user_id, by_user.get(user_id))
        assert linked[user_id] == by_user[user_id][0]
    # No customer created twice: one carried-out create per idempotency key and per user.
    keys = creates(sandbox)
    assert len(set(keys)) == len(to_create)

    # The audit log holds every write, whichever run carried it out.
    engine = sa.create_engine(small_world.settings.state.url)
    with engine.connect() as conn:
        audit = pd.read_sql(
            sa.text("select * from stripe_reconcile_audit where job = 'link-users'"), conn
        )
    engine.dispose()
    unaudited = sorted((to_create | set(to_link)) - set(audit["user_id"].dropna()))
    unaudited_creates = sorted(set(keys) - set(audit["idempotency_key"].dropna()))
    # Each action's row is written ("started") before its write is sent, so a kill
    # between the write and its final outcome still leaves the write in the log.
    assert unaudited == []
    assert unaudited_creates == []
    # Every planned user's last row is a final outcome, or "started" where a kill struck
    # after its write and before its outcome (the rerun then had nothing left to do).
    last = audit.sort_values("id").groupby("user_id").tail(1)
    assert set(last["outcome"]) <= {"applied", "unchanged", "started"}
    finished = audit[audit["outcome"].isin(["applied", "unchanged"])]
    assert to_create | set(to_link) <= set(finished["user_id"]) | set(
        audit[audit["outcome"] == "started"]["user_id"]
    )
