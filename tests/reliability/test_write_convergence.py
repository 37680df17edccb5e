"""Property: whatever the user DB and Stripe go through between runs of sync-metadata and
link-users, every write is audited, none is lost to an idempotent replay, and the jobs
converge on the user DB's state.

A sequence is a few rounds; each round makes some changes (in the users table: a plan,
an email or a name changes, a user is added, soft-deleted or loses its link; in Stripe,
by someone else: a customer's metadata is edited, a customer is deleted or created) and
then runs one job with `--apply` through `execute_job`, against one sandbox (reset for
each example) and a real users table. After each run: every write Stripe answered 2xx has
an `applied` audit row with its idempotency key, and every `applied` row's `after` is what
Stripe and the user DB hold. After the sequence, link-users --create-missing and
sync-metadata run once more, and then their dry runs plan nothing.

The explicit examples are the replays of issue 12: a plan pro -> free -> pro over three
runs (the third update reused the first one's key, Stripe replayed it and kept `free`),
and create -> delete -> create (the user was linked to the deleted customer).
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jobs.registry import JOBS
from jobs.runner import RunOutcome, execute_job
from reconcile.logs import configure_logging
from reconcile.settings import Settings, StateSettings, load_settings
from sandbox.runner import SandboxServer
from sandbox.store import CustomerRecord
from tests.maintenance.world import USERS
from tests.reliability.write_checks import (
    CustomerView,
    lost_writes,
    read_audit,
    successful_writes,
    unaudited_writes,
)

TEST_KEY = "sk_test_" + "ConvergenceKey1234abcd"
T0 = 1_700_000_000
PLANS = ("pro", "free")
NAMES = ("Ada", "Grace")
MODE = "test"

SYNC = "sync-metadata"
LINK = "link-users"
LINK_CREATE = "link-users --create-missing"

# A change is a tuple: its kind, then its arguments. Indices pick a user (by id order) or a
# live customer (by creation order) modulo how many there are at that moment.
Change = tuple[Any, ...]
Round = tuple[list[Change], str]

changes = st.one_of(
    st.tuples(st.just("plan"), st.integers(0, 5), st.sampled_from(PLANS)),
    st.tuples(st.just("email"), st.integers(0, 5), st.integers(0, 2)),
    st.tuples(st.just("name"), st.integers(0, 5), st.sampled_from(NAMES)),
    st.tuples(st.just("add_user"), st.sampled_from(PLANS)),
    st.tuples(st.just("soft_delete"), st.integers(0, 5)),
    st.tuples(st.just("clear_link"), st.integers(0, 5)),
    st.tuples(st.just("stripe_metadata"), st.integers(0, 5), st.sampled_from((*PLANS, None))),
    st.tuples(st.just("stripe_delete"), st.integers(0, 5)),
    st.tuples(st.just("stripe_create"), st.integers(0, 5), st.booleans()),
)
rounds = st.lists(
    st.tuples(st.lists(changes, max_size=3), st.sampled_from((SYNC, LINK, LINK_CREATE))),
    min_size=2,
    max_size=5,
)
# (user plan, Stripe's plan) for each initial user, each linked to its own customer.
initial_users = st.lists(
    st.tuples(st.sampled_from(PLANS), st.sampled_from(PLANS)), min_size=2, max_size=4
)


def email_of(user_id: int, version: int) -> str:
    return f"u{user_id}@example.com" if version == 0 else f"u{user_id}.v{version}@example.com"


@dataclass
class World:
    sandbox: SandboxServer
    settings: Settings
    users_url: str
    engine: sa.Engine

    # --- the user DB ---------------------------------------------------------------------
    def user_ids(self) -> list[int]:
        with self.engine.connect() as conn:
            return [int(r[0]) for r in conn.execute(sa.select(USERS.c.id).order_by(USERS.c.id))]

    def link_of(self, user_id: str) -> str | None:
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(USERS.c.stripe_customer_id).where(USERS.c.id == int(user_id))
            ).scalar()
        return str(found).strip() or None if found is not None else None

    def update_user(self, index: int, **values: Any) -> None:
        ids = self.user_ids()
        with self.engine.begin() as conn:
            conn.execute(USERS.update().where(USERS.c.id == ids[index % len(ids)]).values(values))

    def add_user(self, plan: str) -> None:
        user_id = max(self.user_ids(), default=0) + 1
        with self.engine.begin() as conn:
            conn.execute(
                USERS.insert().values(
                    id=user_id, email=email_of(user_id, 0), name=f"User {user_id}", plan=plan
                )
            )

    # --- Stripe, changed by someone else -------------------------------------------------
    def live_customers(self) -> list[CustomerRecord]:
        with self.sandbox.store.lock:
            records = self.sandbox.store.mode(MODE).customers.values()
            return sorted((r for r in records if not r.deleted), key=lambda r: r.key)

    def customer(self, customer_id: str) -> CustomerView | None:
        with self.sandbox.store.lock:
            record = self.sandbox.store.mode(MODE).customers.get(customer_id)
            if record is None:
                return None
            if record.deleted:
                return CustomerView(deleted=True)
            return CustomerView(
                email=record.email,
                name=record.name,
                metadata=dict(record.metadata),
                default_payment_method=record.default_payment_method,
            )

    def apply(self, change: Change) -> None:
        kind, *args = change
        if kind == "plan":
            self.update_user(args[0], plan=args[1])
        elif kind == "email":
            ids = self.user_ids()
            self.update_user(args[0], email=email_of(ids[args[0] % len(ids)], args[1]))
        elif kind == "name":
            self.update_user(args[0], name=args[1])
        elif kind == "add_user":
            self.add_user(args[0])
        elif kind == "soft_delete":
            self.update_user(args[0], deleted_at=datetime(2026, 1, 1, tzinfo=UTC))
        elif kind == "clear_link":
            self.update_user(args[0], stripe_customer_id=None)
        elif kind.startswith("stripe_"):
            self.apply_in_stripe(kind, args)
        else:
            raise AssertionError(f"unknown change {change!r}")

    def apply_in_stripe(self, kind: str, args: list[Any]) -> None:
        live = self.live_customers()
        store = self.sandbox.store
        if kind == "stripe_create":
            ids = self.user_ids()
            user_id = ids[args[0] % len(ids)]
            with self.engine.connect() as conn:
                email = conn.execute(sa.select(USERS.c.email).where(USERS.c.id == user_id)).scalar()
            with store.lock:
                data = store.mode(MODE)
                stranger = f"stranger{len(data.customers)}@example.net"  # matches no user
                data.add_customer({"email": email if args[1] else stranger})
        elif not live:
            return
        elif kind == "stripe_delete":
            store.mark_deleted(MODE, [live[args[0] % len(live)].id])
        elif kind == "stripe_metadata":
            record = live[args[0] % len(live)]
            metadata = dict(record.metadata)
            if args[1] is None:
                metadata.pop("plan", None)
            else:
                metadata["plan"] = args[1]
            with store.lock:
                store.mode(MODE).update_customer(record, {"metadata": metadata})

    # --- runs ----------------------------------------------------------------------------
    def run(self, command: str, *, apply: bool = True) -> RunOutcome:
        job = LINK if command.startswith(LINK) else SYNC
        options: dict[str, Any] = {"apply": apply, "max_changes": 1000}
        if command == LINK_CREATE:
            options["create_missing"] = True
        return execute_job(JOBS[job], self.settings, options=options)

    def run_and_check(self, command: str) -> None:
        """Run `command` with --apply, then check its writes, its audit and what it left."""
        outcome = self.run(command)
        assert outcome.exit_code == 0, (command, outcome.summary)
        audit = read_audit(self.settings.state.url)
        writes = successful_writes(r.to_json() for r in self.sandbox.request_log.entries())
        unaudited = unaudited_writes(writes, audit, applied_only=True)
        assert unaudited == [], f"{command}: writes without an applied audit row: {unaudited}"
        # Right after the run nobody else has changed anything: what it says it applied
        # must be what Stripe and the user DB hold.
        this_run = [row for row in audit if row.run_id == outcome.run_id]
        lost = lost_writes(this_run, self.customer, self.link_of)
        assert lost == [], f"{command}: applied in the audit, not held: {lost}"


@contextmanager
def sqlite_users(folder: Path) -> Iterator[str]:
    yield f"sqlite:///{folder / 'users.db'}"


@contextmanager
def world_for(
    sandbox: SandboxServer, users: list[tuple[str, str]], users_db: Callable[[Path], Any]
) -> Iterator[World]:
    sandbox.store.reset()
    sandbox.request_log.clear()
    sandbox.faults.clear()
    customers = [
        {
            "id": f"cus_{n}",
            "created": T0 + n * 60,
            "email": email_of(n, 0),
            "name": f"User {n}",
            "metadata": {"user_id": str(n), "plan": stripe_plan},
        }
        for n, (_plan, stripe_plan) in enumerate(users, start=1)
    ]
    sandbox.store.bulk_load(MODE, customers)
    with tempfile.TemporaryDirectory() as tmp, users_db(Path(tmp)) as users_url:
        engine = sa.create_engine(users_url)
        USERS.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                USERS.insert(),
                [
                    {
                        "id": n,
                        "email": email_of(n, 0),
                        "name": f"User {n}",
                        "plan": plan,
                        "stripe_customer_id": f"cus_{n}",
                        "deleted_at": None,
                    }
                    for n, (plan, _stripe_plan) in enumerate(users, start=1)
                ],
            )
        env = {"STRIPE_SECRET_KEY": TEST_KEY, "STRIPE_API_BASE": sandbox.url}
        base = load_settings(None, env=env)
        settings = base.model_copy(
            update={
                "userdb": base.userdb.model_copy(update={"url": users_url}),
                "state": StateSettings(url=f"sqlite:///{Path(tmp) / 'state.db'}"),
                "reports": base.reports.model_copy(update={"out": Path(tmp) / "output"}),
                "maintenance": base.maintenance.model_copy(
                    update={"sync_email": True, "sync_name": True}
                ),
            }
        )
        try:
            yield World(sandbox, settings, users_url, engine)
        finally:
            engine.dispose()


def check_sequence(world: World, sequence: list[Round]) -> None:
    for round_changes, command in sequence:
        for change in round_changes:
            world.apply(change)
        world.run_and_check(command)
    # One more pass of each job, then nothing is left to do: the user DB's state is reached.
    world.run_and_check(LINK_CREATE)
    world.run_and_check(SYNC)
    for command in (LINK_CREATE, SYNC):
        planned = world.run(command, apply=False).result.facts["planned_changes"]
        assert planned == 0, f"{command}: a dry run after convergence still plans {planned}"


# Issue 12's replays, always tried first.
PLAN_CYCLE: list[Round] = [([], SYNC), ([("plan", 0, "free")], SYNC), ([("plan", 0, "pro")], SYNC)]
CREATE_DELETE_CREATE: list[Round] = [
    ([("add_user", "pro")], LINK_CREATE),
    ([("stripe_delete", 2), ("clear_link", 2)], LINK_CREATE),
]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(users=[("pro", "free"), ("free", "free")], sequence=PLAN_CYCLE)
@example(users=[("pro", "pro"), ("free", "free")], sequence=CREATE_DELETE_CREATE)
@given(users=initial_users, sequence=rounds)
def test_runs_between_changes_converge_with_every_write_audited_and_none_lost(
    sandbox_server: SandboxServer, users: list[tuple[str, str]], sequence: list[Round]
) -> None:
    configure_logging("error")
    with world_for(sandbox_server, users, sqlite_users) as world:
        check_sequence(world, sequence)


@pytest.mark.postgres
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(users=[("pro", "free"), ("free", "free")], sequence=PLAN_CYCLE)
@example(users=[("pro", "pro"), ("free", "free")], sequence=CREATE_DELETE_CREATE)
@given(users=initial_users, sequence=rounds)
def test_the_same_on_a_postgresql_users_table(
    sandbox_server: SandboxServer,
    postgres_server_url: str,
    users: list[tuple[str, str]],
    sequence: list[Round],
) -> None:
    configure_logging("error")

    @contextmanager
    def postgres_users(_folder: Path) -> Iterator[str]:
        schema = f"conv_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(postgres_server_url)
        with admin.begin() as conn:
            conn.execute(sa.text(f'create schema "{schema}"'))
        sep = "&" if "?" in postgres_server_url else "?"
        try:
            yield f"{postgres_server_url}{sep}options=-csearch_path%3D{schema}"
        finally:
            with admin.begin() as conn:
                conn.execute(sa.text(f'drop schema "{schema}" cascade'))
            admin.dispose()

    with world_for(sandbox_server, users, postgres_users) as world:
        check_sequence(world, sequence)
