"""Local-side benchmark: customers snapshot, compare and reports alone, no Stripe, no network.

Usage: .venv/bin/python bench/local_bench.py [--sizes N ...] [--seed S] [--profile] [--dicts]

For each size N (users = customers = N, about: the seed generator plants its anomalies)
a child process generates the seeded account and turns it into what the reconcile job
has once its listing is done: the customers stored as list pages of 100, one file each
(as reconcile.listing.parts stores pages), and the users snapshot. It drops the generator's objects,
resets the kernel's peak-RSS mark, and then times
1. the customers snapshot: `listing_frame` over the parts, as the job builds it (with
   `--dicts`: the parts read back as dicts and `customers_frame`, the old way),
2. `missing_customer_ids` + `compare_all`,
3. `write_run_reports` (CSV + Parquet + per-kind CSVs + summaries) into a temporary folder.
It prints seconds per stage and the peak RSS of the process during those stages (the
users snapshot held in memory included). `--profile` prints pyinstrument's top lines.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from reconcile.listing.checkpoints import WindowCheckpoint  # noqa: E402
from reconcile.listing.parts import page_body, read_parts, write_part  # noqa: E402
from reconcile.listing.walk import listing_frame, merge_records  # noqa: E402
from reconcile.rules.compare import CompareConfig, compare_all, missing_customer_ids  # noqa: E402
from reconcile.rules.snapshots import customers_frame  # noqa: E402
from reports.writer import write_run_reports  # noqa: E402
from sandbox.seed import (  # noqa: E402
    GROUND_TRUTH_CONFIG,
    generate_account,
    listed_customers,
    users_snapshot,
)

NOW = 1_760_000_000
SIZES = (100_000, 300_000, 1_000_000)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    Path("/proc/self/clear_refs").write_text("5")


PART_ROWS = 100  # one page per part, as a listing stores them


def _inputs(
    n: int, seed: int, work_dir: Path
) -> tuple[list[WindowCheckpoint], pd.DataFrame, CompareConfig]:
    config = CompareConfig(
        user_id_metadata_key=GROUND_TRUTH_CONFIG["user_id_metadata_key"],
        metadata_keys=tuple(GROUND_TRUTH_CONFIG["metadata_keys"]),
        scope=GROUND_TRUTH_CONFIG["scope"],
    )
    account = generate_account(n, seed=seed, now=NOW)
    records = listed_customers(account)
    users = users_snapshot(account)
    del account
    pages = 0
    for start in range(0, len(records), PART_ROWS):
        write_part(work_dir, 0, pages, page_body(records[start : start + PART_ROWS]))
        pages += 1
    del records
    gc.collect()
    return [WindowCheckpoint(0, None, NOW, None, pages, 0, True)], users, config


def _stages(
    parts: tuple[Path, list[WindowCheckpoint]],
    users: pd.DataFrame,
    config: CompareConfig,
    out: Path,
    dicts: bool,
) -> dict[str, float]:
    times: dict[str, float] = {}
    work_dir, checkpoints = parts
    keys = config.customer_metadata_keys()
    started = time.perf_counter()
    if dicts:
        records = read_parts(work_dir, [(c.window, c.pages) for c in checkpoints])
        customers = customers_frame(merge_records(records), keys)
    else:
        customers = listing_frame(work_dir, checkpoints, keys)
    times["snapshot_s"] = time.perf_counter() - started
    started = time.perf_counter()
    causes: dict[str, Any] = {cid: "absent" for cid in missing_customer_ids(customers, users)}
    findings = compare_all(customers, users, config, causes)
    times["compare_s"] = time.perf_counter() - started
    started = time.perf_counter()
    write_run_reports(out, "reconcile", "bench-run", findings, {"customers": len(customers)})
    times["reports_s"] = time.perf_counter() - started
    times["findings"] = float(len(findings))
    return times


def one(n: int, seed: int, profile: bool, dicts: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(tmp) / "parts"
        checkpoints, users, config = _inputs(n, seed, work_dir)
        facts: dict[str, float] = {"users": float(len(users))}
        facts["inputs_rss_mb"] = _status_mb("VmRSS")
        _reset_peak()
        out, parts = Path(tmp) / "out", (work_dir, checkpoints)
        if profile:
            from pyinstrument import Profiler

            profiler = Profiler()
            with profiler:
                facts.update(_stages(parts, users, config, out, dicts))
            print(profiler.output_text(unicode=False, color=False, show_all=False), file=sys.stderr)
        else:
            facts.update(_stages(parts, users, config, out, dicts))
    facts["peak_rss_mb"] = _status_mb("VmHWM")
    facts["total_s"] = facts["snapshot_s"] + facts["compare_s"] + facts["reports_s"]
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="pyinstrument's profile")
    parser.add_argument("--dicts", action="store_true", help="snapshot from dicts (old way)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.seed, args.profile, args.dicts)))
        return
    header = ("size", "snapshot s", "compare s", "reports s", "total s", "inputs MB", "peak MB")
    print("".join(f"{h:>12}" for h in header))
    for n in args.sizes:
        # One child per size: its peak RSS is its own, not the largest size's so far.
        command = [sys.executable, __file__, "--one", str(n), "--seed", str(args.seed)]
        command += ["--profile"] if args.profile else []
        command += ["--dicts"] if args.dicts else []
        done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        row = (
            f"{n:,}",
            f"{r['snapshot_s']:.2f}",
            f"{r['compare_s']:.2f}",
            f"{r['reports_s']:.2f}",
            f"{r['total_s']:.2f}",
            f"{r['inputs_rss_mb']:,.0f}",
            f"{r['peak_rss_mb']:,.0f}",
        )
        print("".join(f"{c:>12}" for c in row), flush=True)


if __name__ == "__main__":
    main()
