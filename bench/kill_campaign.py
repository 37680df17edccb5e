"""Kill campaign: every write job SIGKILLed at random points, rerun until it succeeds, checked.

Usage: .venv/bin/python bench/kill_campaign.py [--trials N] [--seed S] [--kills K]
                                               [--jobs a,b] [--databases sqlite,postgresql]
                                               [--size N] [--latency-ms MS] [--jitter-ms MS]

The sandbox runs in its own process (`stripe-reconcile sandbox`), answering after
`--latency-ms` plus up to `--jitter-ms` (20 + 0..30 ms by default), so a kill lands in the
middle of a plan. For each job and each user database (SQLite, and PostgreSQL at
127.0.0.1:5432 db `test` in a schema of the campaign's own, dropped after each trial),
`--trials` trials each:
1. load a world in which the job has `--size` writes to make (tens), and a fresh state DB;
2. run the job as a subprocess with `--apply --max-changes 1000` and SIGKILL it at a random
   moment (before its first write, or just after its k-th, k random), `--kills` times;
3. rerun it, with `--resume` in every other trial and without in the others, until it
   exits 0 (at most 5 reruns);
4. check, from the sandbox's request log, the audit log, Stripe and the user DB:
   - double: one intended change carried out twice (a field of a customer set to the same
     value by two writes, a second customer created for one user, a customer deleted twice);
   - lost: an audit row says `applied` but Stripe or the user DB does not hold its `after`;
   - unaudited: a write Stripe answered 2xx without an audit row carrying its key;
   - converged: the reruns ended with exit 0 and a final dry run plans 0 changes.
It prints one table, job x database: trials, kills (and how many struck after the killed
run's first write: mid-plan), double, lost, unaudited, converged %, then a line per
non-zero counter or unconverged trial. The goal is 0, 0, 0, 100 %.
Runs outside `make test`: about 5 minutes with the defaults on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability.helpers import render_toml  # noqa: E402
from tests.reliability.write_checks import (  # noqa: E402
    CustomerView,
    customer_view,
    double_writes,
    lost_writes,
    read_audit,
    successful_writes,
    unaudited_writes,
)

TEST_KEY = "sk_test_" + "KillCampaignKey1234abcd"
POSTGRES_URL = os.environ.get(
    "STRIPE_RECONCILE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
USERS_TABLE = "kill_campaign_users"
T0 = 1_700_000_000
MAX_RERUNS = 5
RUN_TIMEOUT_SECONDS = 300.0
# The CLI of this checkout (not whatever `stripe-reconcile` the PATH holds).
CLI = [sys.executable, "-c", "from jobs.commands.cli import main; main()"]

JOB_ARGS: dict[str, list[str]] = {
    "sync-metadata": [],
    "link-users": ["--create-missing"],
    "dedupe": [],
    "gdpr-delete": [],
    "default-payment-method": [],
}

USERS = sa.Table(
    USERS_TABLE,
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("email", sa.String(320)),
    sa.Column("name", sa.String(200)),
    sa.Column("plan", sa.String(40)),
    sa.Column("stripe_customer_id", sa.String(64)),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
)


# --- worlds: one per job, where that job has `size` writes to make ---------------------------
@dataclass
class World:
    customers: list[dict[str, Any]] = field(default_factory=list)
    payment_methods: list[dict[str, Any]] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # customers deleted before the run

    def customer(self, n: int, uid: int | None, **fields: Any) -> str:
        metadata = dict(fields.pop("metadata", {}))
        if uid is not None:
            metadata.setdefault("user_id", str(uid))
        cid = f"cus_k{n:04d}"
        self.customers.append({"id": cid, "created": T0 + n * 60, "metadata": metadata, **fields})
        return cid

    def user(self, uid: int, customer: str | None, **fields: Any) -> None:
        self.users.append(
            {
                "id": uid,
                "email": fields.get("email", f"u{uid}@example.com"),
                "name": fields.get("name", f"User {uid}"),
                "plan": fields.get("plan", "pro"),
                "stripe_customer_id": customer,
                "deleted_at": fields.get("deleted_at"),
            }
        )

    def card(self, n: int, customer: str, exp_year: int = 2031) -> None:
        card = {"brand": "visa", "last4": f"{n % 10000:04d}", "exp_month": 6,
                "exp_year": exp_year, "fingerprint": f"fpk{n:05d}"}  # fmt: skip
        self.payment_methods.append(
            {"id": f"pm_k{n:05d}", "created": T0 + n * 60, "customer": customer, "card": card}
        )

    def linked_user(self, n: int, **customer_fields: Any) -> str:
        """A user and its customer, in agreement (a bystander for most jobs)."""
        cid = self.customer(n, n, email=f"u{n}@example.com", name=f"User {n}",
                            metadata={"plan": "pro"}, **customer_fields)  # fmt: skip
        self.user(n, cid)
        return cid


def world_for(job: str, size: int) -> World:
    world = World()
    bystanders = range(1, 6)
    for n in bystanders:
        world.linked_user(n)
    first = 100
    if job == "sync-metadata":
        for n in range(first, first + size):
            # Most plans changed; every fifth user's plan is NULL: its key is deleted.
            cid = world.customer(n, n, email=f"u{n}@example.com", name=f"User {n}",
                                 metadata={"plan": "free"})  # fmt: skip
            world.user(n, cid, plan=None if n % 5 == 0 else "pro")
    elif job == "link-users":
        for n in range(first, first + size):
            world.user(n, None)  # matches nothing: a customer is created, then linked
        for n in range(first + size, first + size + size // 3):
            world.customer(n, n, email=f"other{n}@example.com", metadata={"plan": "pro"})
            world.user(n, None)  # matched by metadata.user_id: linked in the user DB only
    elif job == "dedupe":
        for group in range(size // 2):
            n = first + 3 * group
            canonical = world.customer(n, n, email=f"u{n}@example.com", name=f"User {n}",
                                       metadata={"plan": "pro"})  # fmt: skip
            world.user(n, canonical)
            world.customer(n + 1, None, email=f"u{n}@example.com")  # idle: deleted
            busy = world.customer(n + 2, None, email=f"U{n}@example.com")  # a card: tagged
            world.card(n + 2, busy)
    elif job == "gdpr-delete":
        gone = datetime(2026, 1, 1, tzinfo=UTC)
        for n in range(first, first + size):
            cid = world.customer(n, n, email=f"u{n}@example.com", name=f"User {n}")
            world.user(n, cid, deleted_at=gone)
        for n in range(first + size, first + size + 3):
            # Deleted in Stripe already: only the link is cleared.
            cid = world.customer(n, n, email=f"u{n}@example.com")
            world.user(n, cid, deleted_at=gone)
            world.deleted.append(cid)
    elif job == "default-payment-method":
        for n in range(first, first + size):
            cid = world.linked_user(n)
            world.card(2 * n, cid, exp_year=2030)
            if n % 2:
                world.card(2 * n + 1, cid, exp_year=2032)
    else:
        raise SystemExit(f"kill_campaign: unknown job {job!r}; use one of {', '.join(JOB_ARGS)}")
    return world


# --- the sandbox in its own process --------------------------------------------------------
class Sandbox:
    def __init__(self, latency_ms: float, jitter_ms: float) -> None:
        self.latency_ms, self.jitter_ms = latency_ms, jitter_ms
        self.process = subprocess.Popen(
            [*CLI, "sandbox", "--port", "0", "--latency-ms", str(latency_ms),
             "--jitter-ms", str(jitter_ms)],
            cwd=ROOT, env=cli_env(None), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"http://\S+", line)
        if found is None:
            self.process.kill()
            raise SystemExit(f"kill_campaign: the sandbox did not start (it printed {line!r})")
        self.url = found.group(0)
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {TEST_KEY}"

    def admin(self, method: str, route: str, body: Mapping[str, Any] | None = None) -> Any:
        answer = self.http.request(method, f"{self.url}/_sandbox/{route}", json=body, timeout=60)
        answer.raise_for_status()
        return answer.json()

    def load(self, world: World) -> None:
        self.admin("POST", "reset")
        self.admin("POST", "load", {"mode": "test", "customers": world.customers,
                                    "payment_methods": world.payment_methods})  # fmt: skip
        for cid in world.deleted:
            self.http.delete(f"{self.url}/v1/customers/{cid}", timeout=60).raise_for_status()
        self.admin("DELETE", "requests")

    def slow(self, on: bool) -> None:
        """Latency and Stripe's rate limits while jobs run; neither while the campaign checks."""
        latency = {"latency_ms": self.latency_ms, "jitter_ms": self.jitter_ms} if on else {
            "latency_ms": 0, "jitter_ms": 0}  # fmt: skip
        self.admin("POST", "config", {**latency, "limits": {"enabled": on}})

    def requests(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.admin("GET", "requests")["data"]
        return data

    def customer(self, customer_id: str) -> CustomerView | None:
        answer = self.http.get(f"{self.url}/v1/customers/{customer_id}", timeout=60)
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return customer_view(answer.json())

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def cli_env(sandbox_url: str | None) -> dict[str, str]:
    unwanted = (
        "STRIPE_SECRET_KEY_FILE",
        "STRIPE_RECONCILE_CONFIG",
        "STRIPE_RECONCILE_CONFIRM_LIVE",
    )
    env = {k: v for k, v in os.environ.items() if k not in unwanted}
    env["PYTHONPATH"] = str(ROOT)
    env["STRIPE_SECRET_KEY"] = TEST_KEY
    if sandbox_url is not None:
        env["STRIPE_API_BASE"] = sandbox_url
    return env


# --- user and state databases ----------------------------------------------------------------
@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[tuple[str, str]]:
    """(users URL, state URL): SQLite files in `folder`, or a PostgreSQL schema of our own."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'users.db'}", f"sqlite:///{folder / 'state.db'}"
        return
    schema = f"kill_campaign_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'create schema "{schema}"'))
        sep = "&" if "?" in POSTGRES_URL else "?"
        url = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
        yield url, url
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'drop schema if exists "{schema}" cascade'))
        admin.dispose()


def write_users(url: str, users: Sequence[Mapping[str, Any]]) -> None:
    engine = sa.create_engine(url)
    try:
        USERS.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(USERS.insert(), list(users))
    finally:
        engine.dispose()


def links(url: str) -> dict[str, str | None]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(USERS.c.id, USERS.c.stripe_customer_id)).all()
    finally:
        engine.dispose()
    return {str(r[0]): (str(r[1]).strip() or None) if r[1] is not None else None for r in rows}


# --- one trial -------------------------------------------------------------------------------
@dataclass
class Trial:
    kills: int = 0
    mid_plan: int = 0  # kills that struck after the killed run's first write
    double: int = 0
    lost: int = 0
    unaudited: int = 0
    converged: bool = False
    notes: list[str] = field(default_factory=list)


def _writes_so_far(sandbox: Sandbox) -> int:
    return len(successful_writes(sandbox.requests()))


def _kill_at_random(
    command: list[str], env: Mapping[str, str], sandbox: Sandbox, rng: random.Random, size: int
) -> int | None:
    """Start `command`; SIGKILL it before its first write or just after its k-th. Returns
    how many writes it made before the kill, or None when it finished first."""
    before = _writes_so_far(sandbox)
    k = rng.randint(0, max(0, size - before))
    process = subprocess.Popen(command, cwd=ROOT, env=dict(env), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    if k == 0:
        # Anywhere from start-up to the plan: reading, listing, planning, the first write.
        stop_at = time.monotonic() + rng.uniform(0.5, 4.0)
        while time.monotonic() < stop_at and process.poll() is None:
            time.sleep(0.01)
    else:
        while _writes_so_far(sandbox) - before < k and process.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        # Within the next request's latency, or between a write and its audit row.
        time.sleep(rng.uniform(0.0, (sandbox.latency_ms + sandbox.jitter_ms) / 1000.0))
    killed = process.poll() is None
    if killed:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)  # reaped: the next run sees the lease holder's process gone
    return _writes_so_far(sandbox) - before if killed else None


def _run(command: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, env=dict(env), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_SECONDS, check=False)  # fmt: skip


def run_trial(
    job: str,
    kind: str,
    sandbox: Sandbox,
    args: argparse.Namespace,
    rng: random.Random,
    resume: bool,
) -> Trial:
    trial = Trial()
    world = world_for(job, args.size)
    with (
        tempfile.TemporaryDirectory(prefix="kill-campaign-") as tmp,
        database(kind, Path(tmp)) as (users_url, state_url),
    ):
        write_users(users_url, world.users)
        sections: dict[str, dict[str, Any]] = {
            "stripe": {"max_retries": 3, "retry_initial_delay": 0.05},
            "userdb": {"url": users_url, "table": USERS_TABLE},
            "state": {"url": state_url},
            "reports": {"out": str(Path(tmp) / "out"), "formats": ["csv"]},
        }
        config = Path(tmp) / "config.toml"
        config.write_text(render_toml(sections), encoding="utf-8")
        base = [*CLI, "run", job, *JOB_ARGS[job], "--config", str(config)]
        apply = [*base, "--apply", "--max-changes", "1000"]
        env = cli_env(sandbox.url)

        sandbox.load(world)
        sandbox.slow(True)
        for _ in range(args.kills):
            written = _kill_at_random(apply, env, sandbox, rng, args.size)
            trial.kills += written is not None
            trial.mid_plan += bool(written)
        codes = []
        for _ in range(MAX_RERUNS):
            done = _run([*apply, "--resume"] if resume else apply, env)
            codes.append(done.returncode)
            if done.returncode == 0:
                break
            trial.notes.append(_last_error(done))
        sandbox.slow(False)

        dry = _run(base, env)
        planned = _planned_changes(dry)
        trial.converged = codes[-1] == 0 and planned == 0
        if not trial.converged:
            trial.notes.append(f"reruns exited {codes}; the final dry run plans {planned}")

        writes = successful_writes(sandbox.requests())
        audit = read_audit(state_url)
        doubles = double_writes(writes)
        trial.double = sum(d.times - 1 for d in doubles)
        trial.notes += [f"double: {d.what} ({d.times} times)" for d in doubles]
        unaudited = unaudited_writes(writes, audit)
        trial.unaudited = len(unaudited)
        trial.notes += [
            f"unaudited: {w.method} {w.path} key={w.idempotency_key}" for w in unaudited
        ]
        linked = links(users_url)
        lost = lost_writes(audit, sandbox.customer, linked.get)
        trial.lost = len(lost)
        trial.notes += [f"lost: {line}" for line in lost]
    return trial


def _last_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith(("stripe-reconcile:", "Error"))]
    return f"a rerun exited {done.returncode}: {lines[-1] if lines else done.stderr[-200:]!r}"


def _planned_changes(done: subprocess.CompletedProcess[str]) -> int | None:
    if done.returncode != 0 or not done.stdout.strip():
        return None
    summary = Path(done.stdout.strip().splitlines()[-1]) / "summary.json"
    try:
        return int(json.loads(summary.read_text(encoding="utf-8"))["planned_changes"])
    except (OSError, ValueError, KeyError):
        return None


# --- the campaign ----------------------------------------------------------------------------
def _postgres_reachable() -> str | None:
    try:
        engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect: that database is left out, saying why
        return f"PostgreSQL not reachable at {POSTGRES_URL} ({type(exc).__name__})"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2, help="per job and database (2)")
    parser.add_argument("--kills", type=int, default=1, help="kills per trial, then reruns (1)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--jobs", default=",".join(JOB_ARGS))
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--size", type=int, default=30, help="writes each job has to make (30)")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--jitter-ms", type=float, default=30.0)
    args = parser.parse_args()
    jobs = [j for j in args.jobs.split(",") if j]
    kinds = [d for d in args.databases.split(",") if d]
    for name, value in (("--trials", args.trials), ("--kills", args.kills), ("--size", args.size)):
        if value < 1:
            raise SystemExit(f"kill_campaign: {name} must be at least 1, got {value}")
    unknown = sorted(set(jobs) - set(JOB_ARGS)) + sorted(set(kinds) - {"sqlite", "postgresql"})
    if unknown:
        raise SystemExit(f"kill_campaign: unknown job or database {unknown}; see --help")
    if "postgresql" in kinds and (why := _postgres_reachable()) is not None:
        print(f"skipping postgresql: {why}", file=sys.stderr)
        kinds.remove("postgresql")

    rng = random.Random(args.seed)
    sandbox = Sandbox(args.latency_ms, args.jitter_ms)
    started = time.monotonic()
    rows: list[tuple[str, str, list[Trial]]] = []
    try:
        for job in jobs:
            for kind in kinds:
                trials = []
                for number in range(args.trials):
                    trial = run_trial(job, kind, sandbox, args, rng, resume=number % 2 == 1)
                    trials.append(trial)
                    print(f"  {job} {kind} trial {number + 1}: kills {trial.kills}, double "
                          f"{trial.double}, lost {trial.lost}, unaudited {trial.unaudited}, "
                          f"converged {trial.converged}", file=sys.stderr, flush=True)  # fmt: skip
                rows.append((job, kind, trials))
    finally:
        sandbox.stop()

    print(f"{'job':<24}{'database':<12}{'trials':>7}{'kills':>7}{'mid-plan':>9}{'double':>8}"
          f"{'lost':>6}{'unaudited':>11}{'converged':>11}")  # fmt: skip
    for job, kind, trials in rows:
        converged = 100.0 * sum(t.converged for t in trials) / len(trials)
        print(f"{job:<24}{kind:<12}{len(trials):>7}{sum(t.kills for t in trials):>7}"
              f"{sum(t.mid_plan for t in trials):>9}"
              f"{sum(t.double for t in trials):>8}{sum(t.lost for t in trials):>6}"
              f"{sum(t.unaudited for t in trials):>11}{converged:>10.0f}%")  # fmt: skip
    print(f"({time.monotonic() - started:.0f} s; seed {args.seed}; --resume in every other trial)")
    for job, kind, trials in rows:
        for number, trial in enumerate(trials, start=1):
            for note in dict.fromkeys(trial.notes):
                print(f"{job} {kind} trial {number}: {note}")


if __name__ == "__main__":
    main()
