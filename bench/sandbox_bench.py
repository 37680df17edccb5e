"""Sandbox benchmark: seeding time, list pages per second over HTTP, cost of a deep page, RSS.

Usage: .venv/bin/python bench/sandbox_bench.py [--customers N ...] [--seconds S] [--workers W]

For each size it
1. generates the account with the project's seed generator and bulk-loads it into a store,
   timing both (the store's own peak RSS is reported by the server process below);
2. times `list_customers` for the first page and for a page at 90 % depth, straight on the
   store (no HTTP), to show that depth does not matter;
3. starts the sandbox in its own process (`serve_forever`, seeded the same way, rate limits
   off so the server's own ceiling shows) and pages through every customer with `limit=100`
   from W concurrent `created` windows over HTTP (aiohttp client, full JSON parsing), as the
   project's pager does; it reports pages/s, customers/s and the server's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from statistics import median
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.seed import generate_account  # noqa: E402
from sandbox.store import SandboxStore  # noqa: E402

KEY = "sk_test_benchmarkKEY0001"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed_in_process(customers: int, seed: int) -> tuple[dict[str, float], list[int], SandboxStore]:
    started = time.perf_counter()
    account = generate_account(customers, seed=seed)
    generated = time.perf_counter()
    store = SandboxStore()
    store.bulk_load("test", account.customers, account.payment_methods)
    store.mark_deleted("test", account.deleted_customer_ids)
    loaded = time.perf_counter()
    created = sorted(int(c["created"]) for c in account.customers)
    facts = {
        "generate_s": generated - started,
        "bulk_load_s": loaded - generated,
        "seed_total_s": loaded - started,
        "payment_methods": float(len(account.payment_methods)),
    }
    del account
    return facts, created, store


def deep_page_cost(store: SandboxStore) -> dict[str, float]:
    """Median microseconds of a 100-customer page at the top and at 90 % depth (no HTTP)."""
    data = store.mode("test")
    ids = [record.id for record in data.newest_first()]
    deep_cursor = data.customers[ids[int(len(ids) * 0.9)]]

    def timed(cursor: Any) -> float:
        samples = []
        for _ in range(200):
            started = time.perf_counter()
            data.list_customers(limit=100, starting_after=cursor)
            samples.append(time.perf_counter() - started)
        return median(samples) * 1e6

    return {"page_top_us": timed(None), "page_90pct_depth_us": timed(deep_cursor)}


def _start_server(customers: int, seed: int) -> tuple[subprocess.Popen[str], str, float]:
    program = textwrap.dedent(
        f"""
        from sandbox.ratelimit import RateLimits
        from sandbox.runner import SandboxConfig, serve_forever
        serve_forever(SandboxConfig(port=0, seed_customers={customers}, seed={seed},
                                    limits=RateLimits(enabled=False), max_log_entries=100_000))
        """
    )
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", program], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("Stripe sandbox listening on "):
        process.kill()
        raise RuntimeError(f"the sandbox did not start: {line!r}")
    return process, line.rsplit(" ", 1)[-1], time.perf_counter() - started


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _windows(created: list[int], count: int) -> list[dict[str, int]]:
    """`created` ranges holding about equal numbers of customers; the ends are open."""
    edges = sorted({created[len(created) * i // count] for i in range(1, count)})
    windows: list[dict[str, int]] = []
    low: int | None = None
    for edge in [*edges, None]:
        window: dict[str, int] = {}
        if low is not None:
            window["gte"] = low
        if edge is not None:
            window["lt"] = edge
        windows.append(window)
        low = edge
    return windows


async def _page_window(
    session: aiohttp.ClientSession, url: str, window: dict[str, int], stats: dict[str, int]
) -> None:
    params: dict[str, str] = {"limit": "100"}
    params.update({f"created[{op}]": str(value) for op, value in window.items()})
    while True:
        async with session.get(url + "/v1/customers", params=params) as response:
            if response.status != 200:
                raise RuntimeError(f"page failed with {response.status}: {await response.text()}")
            body = json.loads(await response.read())
        stats["pages"] += 1
        stats["customers"] += len(body["data"])
        if not body["has_more"]:
            return
        params["starting_after"] = body["data"][-1]["id"]


async def page_everything(url: str, created: list[int], workers: int) -> dict[str, float]:
    stats = {"pages": 0, "customers": 0}
    headers = {"Authorization": f"Bearer {KEY}"}
    connector = aiohttp.TCPConnector(limit=workers)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(
            *(_page_window(session, url, w, stats) for w in _windows(created, workers))
        )
        elapsed = time.perf_counter() - started
    return {
        "pages": float(stats["pages"]),
        "customers_listed": float(stats["customers"]),
        "http_seconds": elapsed,
        "pages_per_s": stats["pages"] / elapsed,
        "customers_per_s": stats["customers"] / elapsed,
    }


def run(customers: int, seed: int, workers: int) -> dict[str, float]:
    facts, created, store = seed_in_process(customers, seed)
    facts["customers"] = float(customers)
    facts["live_test_customers"] = float(store.count("test"))
    facts.update(deep_page_cost(store))
    del store
    process, url, startup = _start_server(customers, seed)
    try:
        facts["server_start_with_seed_s"] = startup
        facts.update(asyncio.run(page_everything(url, created, workers)))
        facts["server_peak_rss_mb"] = _peak_rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)
    if facts["customers_listed"] != facts["live_test_customers"]:
        raise RuntimeError(
            f"listed {facts['customers_listed']:.0f} customers, the store holds "
            f"{facts['live_test_customers']:.0f}: the windows missed some"
        )
    facts["bench_process_peak_rss_mb"] = _rss_mb()
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=8, help="concurrent created windows")
    args = parser.parse_args()
    print(f"sandbox benchmark on {os.cpu_count()} CPUs, {args.workers} concurrent windows")
    for customers in args.customers:
        facts = run(customers, args.seed, args.workers)
        print(f"\n== {customers:,} customers ==")
        for name, value in facts.items():
            print(f"  {name:28s} {value:14,.2f}")


if __name__ == "__main__":
    main()
