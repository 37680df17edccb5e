"""Compare benchmark: generation, snapshot building and compare_all at growing sizes.

Usage: .venv/bin/python bench/compare_bench.py [--customers N ...] [--seed S]

For each size it generates the seeded account, builds the customers snapshot (as the
reconcile job does from listed records) and the users snapshot, runs `compare_all` with the
ground truth's configuration, and checks the findings against the ground truth, so a fast
but wrong compare cannot pass unnoticed. Times are wall-clock seconds on this machine.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from reconcile.rules.compare import CompareConfig, compare_all, missing_customer_ids
from reconcile.rules.snapshots import customers_frame
from sandbox.seed import (
    GROUND_TRUTH_CONFIG,
    generate_account,
    listed_customers,
    users_snapshot,
)

NOW = 1_760_000_000


def _run(n_customers: int, seed: int) -> dict[str, Any]:
    config = CompareConfig(
        user_id_metadata_key=GROUND_TRUTH_CONFIG["user_id_metadata_key"],
        metadata_keys=tuple(GROUND_TRUTH_CONFIG["metadata_keys"]),
        scope=GROUND_TRUTH_CONFIG["scope"],
    )
    started = time.perf_counter()
    account = generate_account(n_customers, seed=seed, now=NOW)
    generated = time.perf_counter()

    listed = listed_customers(account)
    customers = customers_frame(listed, config.customer_metadata_keys())
    users = users_snapshot(account)
    framed = time.perf_counter()

    deleted = set(account.deleted_customer_ids)
    live = {c["id"] for c in account.live_customers}
    causes: dict[str, Any] = {
        cid: "deleted" if cid in deleted else "other_mode" if cid in live else "absent"
        for cid in missing_customer_ids(customers, users)
    }
    compare_started = time.perf_counter()
    findings = compare_all(customers, users, config, causes)
    compared = time.perf_counter()

    reported = set(
        findings[["kind", "customer_id", "user_id", "field"]].itertuples(index=False, name=None)
    )
    expected = {
        (r["kind"], r["customer_id"], r["user_id"], r["field"]) for r in account.ground_truth
    }
    return {
        "customers": len(customers),
        "users": len(users),
        "findings": len(findings),
        "generate_s": generated - started,
        "snapshots_s": framed - generated,
        "compare_all_s": compared - compare_started,
        "exact": reported == expected and len(findings) == len(reported),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"{'customers':>10} {'users':>10} {'findings':>9} {'generate':>9} "
          f"{'snapshots':>10} {'compare':>8}  ground truth")  # fmt: skip
    for n in args.customers:
        r = _run(n, args.seed)
        print(
            f"{r['customers']:>10} {r['users']:>10} {r['findings']:>9} {r['generate_s']:>8.2f}s "
            f"{r['snapshots_s']:>9.2f}s {r['compare_all_s']:>7.2f}s  "
            f"{'exact' if r['exact'] else 'MISMATCH'}"
        )


if __name__ == "__main__":
    main()
