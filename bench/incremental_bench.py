"""Incremental benchmark: reads, wall time and peak memory of `--incremental` against `--full`.

Usage: .venv/bin/python bench/incremental_bench.py [--customers 1000000] [--changed 0.005]
                                                   [--latency-ms 300] [--verify]
                                                   [--profile DIR] [--jobs card-expiry]

The sandbox runs in its OWN process (as in scale_bench), seeded with N customers and the
matching users database, at Stripe's test-mode limits and 300 ms answers. Then, each run a
process of its own:
  1. reconcile and card-expiry with a full listing, which leave the customer mirrors;
  2. a share of the customers (default 0.5 %) changed through the API (limits lifted and
     latency off while the changes are made: they are not what is measured): emails,
     names, metadata, new default cards, card-updater expiries, deletes, new customers;
  3. reconcile and card-expiry `--incremental`;
  4. with `--verify`, both again `--full`, and the findings compared kind by kind, id by id.
`--profile DIR` records each run with pyinstrument into `DIR/<job>-<listing>-<step>.txt`
(and `.html`): where a run's own time goes. It prints, per run: the listing, requests
(reads), wall seconds, peak RSS, and for each job the incremental run's reads and wall as a
share of the full run's (the goal: at most
2 % of the reads and 10 % of the time).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sqlite3
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import stripe  # noqa: E402

from bench.scale_bench import KEY, Limits, limits_for, settings_for, start_sandbox  # noqa: E402
from jobs.card_expiry_job import JOB as CARD_EXPIRY  # noqa: E402
from jobs.reconcile_job import JOB as RECONCILE  # noqa: E402
from jobs.runner import execute_job, retry_policy  # noqa: E402
from reconcile.settings import Settings  # noqa: E402
from reconcile.stripe_api.gateway import StripeGateway  # noqa: E402
from reconcile.stripe_api.limiter import RequestLimiter  # noqa: E402

JOBS = {RECONCILE.name: RECONCILE, CARD_EXPIRY.name: CARD_EXPIRY}


def _admin(url: str, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/_sandbox/{route}", data=data, method=method)
    request.add_header("Authorization", f"Bearer {KEY}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _settings(url: str, users_db: Path, work: Path) -> Settings:
    settings = settings_for(url, users_db, work)
    incremental = settings.incremental.model_copy(update={"enabled": True})
    return settings.model_copy(update={"incremental": incremental})


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    settings = _settings(spec["url"], Path(spec["users_db"]), Path(spec["work"]))
    limits: Limits = limits_for(1.0)  # the whole of Stripe's test-mode limits

    def gateway(s: Settings) -> StripeGateway:
        limiter = RequestLimiter(
            limits.global_limit, per_endpoint_limit=limits.per_endpoint, search_limit=limits.search
        )
        return StripeGateway(
            s.require_key(), api_base=s.stripe.api_base, limiter=limiter, policy=retry_policy(s)
        )

    profiler = _profiler() if spec.get("profile") else None
    started = time.perf_counter()
    outcome = execute_job(
        JOBS[spec["job"]],
        settings,
        out_dir=settings.reports.out,
        options={"incremental": spec["incremental"]},
        gateway_factory=gateway,
    )
    wall = time.perf_counter() - started
    if profiler is not None:
        profiler.stop()
        folder = Path(spec["profile"])
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"{spec['job']}-{outcome.summary.get('listing')}-{spec['step']}"
        stem.with_suffix(".txt").write_text(profiler.output_text(unicode=False, show_all=False))
        stem.with_suffix(".html").write_text(profiler.output_html())
    summary = outcome.summary
    findings = sorted(
        f"{kind}|{customer}|{user}"
        for kind, customer, user in outcome.findings[["kind", "customer_id", "user_id"]]
        .astype(str)
        .itertuples(index=False)
    )
    return {
        "job": spec["job"],
        "listing": summary.get("listing"),
        "reason": summary.get("listing_reason"),
        "customers": summary.get("customers_scanned", 0),
        "requests": summary.get("requests_total", 0),
        "by_endpoint": summary.get("requests_by_endpoint", {}),
        "events_applied": summary.get("events_applied"),
        "read_back": summary.get("customers_read_back"),
        "wall_s": wall,
        "phases": summary.get("phase_seconds", {}),
        "peak_rss_mb": _peak_rss_mb(),
        "findings": findings,
    }


def _profiler() -> Any:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.005, async_mode="disabled")
    profiler.start()
    return profiler


def in_child(spec: dict[str, Any]) -> dict[str, Any]:
    import subprocess

    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    return dict(json.loads(done.stdout.splitlines()[-1]))


def change_customers(url: str, users_db: Path, share: float, seed: int = 3) -> dict[str, int]:
    """Change `share` of the customers through the API: every change emits its events."""
    config = _admin(url, "GET", "config")
    _admin(url, "POST", "config", {"latency_ms": 0, "jitter_ms": 0, "limits": {"enabled": False}})
    try:
        client = stripe.StripeClient(KEY, base_addresses={"api": url})
        rng = random.Random(seed)
        total = _admin(url, "GET", "health")["customers"]["test"]
        wanted = max(1, int(total * share))
        # Spread over the whole account: the customers the users database links to.
        pool = _linked_ids(users_db)
        targets = rng.sample(pool, min(wanted, len(pool)))
        counts: dict[str, int] = {}

        def change(number: int, customer_id: str) -> str:
            try:
                return _change(number, customer_id)
            except stripe.InvalidRequestError:
                return "skipped (a planted deleted customer)"

        def _change(number: int, customer_id: str) -> str:
            kind = ("metadata", "email", "name", "default_card", "card_updater", "delete")[
                number % 6
            ]
            if kind == "metadata":
                client.v1.customers.update(customer_id, {"metadata": {"plan": f"p{number % 3}"}})
            elif kind == "email":
                client.v1.customers.update(customer_id, {"email": f"changed{number}@example.com"})
            elif kind == "name":
                client.v1.customers.update(customer_id, {"name": f"Changed {number}"})
            elif kind == "default_card":
                card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer_id})
                client.v1.customers.update(
                    customer_id, {"invoice_settings": {"default_payment_method": card.id}}
                )
            elif kind == "card_updater":
                card = client.v1.payment_methods.attach(
                    "pm_card_mastercard", {"customer": customer_id}
                )
                client.v1.customers.update(
                    customer_id, {"invoice_settings": {"default_payment_method": card.id}}
                )
                year = time.gmtime().tm_year
                _admin(
                    url,
                    "POST",
                    "card_updater",
                    {"payment_method": card.id, "exp_month": 12, "exp_year": year},
                )
            else:
                client.v1.customers.delete(customer_id)
            return kind

        with ThreadPoolExecutor(16) as pool_:
            for kind in pool_.map(lambda item: change(*item), enumerate(targets)):
                counts[kind] = counts.get(kind, 0) + 1
        for number in range(max(1, wanted // 20)):
            client.v1.customers.create(
                {"email": f"new{number}@example.com", "metadata": {"env": "prod"}}
            )
        counts["created"] = max(1, wanted // 20)
        return counts
    finally:
        _admin(
            url,
            "POST",
            "config",
            {
                "latency_ms": config["latency_ms"],
                "jitter_ms": config["jitter_ms"],
                "limits": {"enabled": True},
            },
        )


def _linked_ids(users_db: Path) -> list[str]:
    with sqlite3.connect(users_db) as conn:
        rows = conn.execute(
            "SELECT stripe_customer_id FROM users WHERE stripe_customer_id IS NOT NULL"
        ).fetchall()
    return sorted({str(row[0]) for row in rows if row[0]})


def _row(r: dict[str, Any]) -> str:
    return (
        f"{r['job']:13}{r['listing']:13}{r['customers']:>10,}{r['requests']:>10,}"
        f"{r['wall_s']:>9.1f}{r['peak_rss_mb']:>10,.0f}  events {r['events_applied']}, "
        f"read back {r['read_back']}"
    )


def _progress(r: dict[str, Any]) -> None:
    # Each run as it ends, phases too: a long bench cut short still says what it measured.
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in r["phases"].items())
    print(f"{_row(r)}\n    phases: {phases}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--changed", type=float, default=0.005, help="share changed")
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--jitter-ms", type=float, default=100.0)
    parser.add_argument("--verify", action="store_true", help="full runs after, compared")
    parser.add_argument("--profile", help="record each run with pyinstrument into this folder")
    parser.add_argument(
        "--jobs",
        nargs="+",
        choices=sorted(JOBS),
        default=list(JOBS),
        help="the jobs to measure (default both): a full listing of 1M takes about 10 min",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with contextlib.redirect_stdout(sys.stderr):
            result = run_one(json.loads(args.child))
        print(json.dumps(result))
        return
    low, spread = args.latency_ms - args.jitter_ms, 2 * args.jitter_ms
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        users_db = work / "users.db"
        seeding = time.perf_counter()
        process, url = start_sandbox(args.customers, users_db, latency_ms=low, jitter_ms=spread)
        print(
            f"sandbox with {args.customers:,} customers up in {time.perf_counter() - seeding:.1f}s",
            file=sys.stderr,
            flush=True,
        )
        base = {"url": url, "users_db": str(users_db), "work": str(work), "profile": args.profile}
        results: dict[tuple[str, str], dict[str, Any]] = {}
        try:
            for job in args.jobs:
                results[(job, "full")] = r = in_child(
                    {**base, "job": job, "incremental": False, "step": "first"}
                )
                _progress(r)
            changing = time.perf_counter()
            counts = change_customers(url, users_db, args.changed)
            print(
                f"changed {counts} in {time.perf_counter() - changing:.1f}s",
                file=sys.stderr,
                flush=True,
            )
            for job in args.jobs:
                results[(job, "incremental")] = r = in_child(
                    {**base, "job": job, "incremental": True, "step": "after-changes"}
                )
                _progress(r)
            if args.verify:
                for job in args.jobs:
                    results[(job, "verify")] = r = in_child(
                        {**base, "job": job, "incremental": False, "step": "verify"}
                    )
                    _progress(r)
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(
        f"\n{args.customers:,} customers, {args.changed:.1%} changed, "
        f"{args.latency_ms:.0f} ms answers, Stripe's test-mode limits"
    )
    print(f"{'job':13}{'listing':13}{'customers':>10}{'requests':>10}{'wall s':>9}{'RSS MB':>10}")
    for r in results.values():
        print(_row(r))
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in r["phases"].items())
        print(f"    phases: {phases}")
    for job in args.jobs:
        full, incremental = results[(job, "full")], results[(job, "incremental")]
        reads = incremental["requests"] / max(1, full["requests"])
        wall = incremental["wall_s"] / max(1e-9, full["wall_s"])
        print(
            f"{job}: incremental = {reads:.2%} of the full run's reads "
            f"({incremental['requests']} / {full['requests']}), {wall:.2%} of its wall time"
        )
        if args.verify:
            same = results[(job, "verify")]["findings"] == incremental["findings"]
            print(f"{job}: findings equal to a full listing's: {same}")


if __name__ == "__main__":
    main()
