"""Fault matrix: every job under every fault profile, against a fault-free run of the same account.

Usage: .venv/bin/python bench/fault_matrix.py [--customers N] [--storm-seconds S]
                                              [--real-backoff] [--jobs a,b]

For each job and profile it seeds the sandbox afresh, runs the job (writing jobs with
--apply) and prints: requests, retries, 429s, 5xx, drops, seconds, whether the findings
and the end state of the account equal the fault-free run's, and how many writes were
carried out (and whether any idempotency key was carried out twice). The 429 storm
refuses half the requests for `--storm-seconds` (10 by default, as Stripe's incidents
go), then stops. By default the backoff starts at 50 ms; `--real-backoff` uses the
production 1, 2, 4, 8 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.registry import JOBS
from jobs.runner import execute_job
from reconcile.errors import ReconcileError
from reconcile.logs import configure_logging
from sandbox.runner import SandboxConfig, SandboxServer
from tests.reliability.faults import (
    PROFILES,
    FaultProfile,
    apply_profile,
    clear_profile,
    fault_counts,
    findings_key,
    successful_writes,
)
from tests.seeded import build_world


def _state(sandbox: SandboxServer) -> list[tuple[Any, ...]]:
    with sandbox.store.lock:
        return sorted(
            (c.email or "", c.name or "", tuple(sorted(c.metadata.items())), c.deleted)
            for c in sandbox.store.mode("test").customers.values()
        )


def _one(
    sandbox: SandboxServer,
    job: str,
    profile: FaultProfile,
    args: argparse.Namespace,
    folder: Path,
) -> dict[str, Any]:
    world = build_world(sandbox, folder, f"sqlite:///{folder / 'users.db'}", seed=4,
                        customers=args.customers)  # fmt: skip
    stripe = {"max_retries": 8} if args.real_backoff else {"max_retries": 8,
                                                          "retry_initial_delay": 0.05}  # fmt: skip
    settings = world.settings.model_copy(
        update={"stripe": world.settings.stripe.model_copy(update=stripe)}
    )
    sandbox.request_log.clear()
    storm = profile.name == "429-storm"
    apply_profile(sandbox, profile)
    if storm:
        timer = threading.Timer(args.storm_seconds, lambda: setattr(
            sandbox.state.faults, "rate_limit_rate", 0.0))  # fmt: skip
        timer.start()
    started = time.monotonic()
    options = {"apply": True, "max_changes": 10**6} if JOBS[job].writes else {}
    try:
        outcome = execute_job(JOBS[job], settings, options=options)
        error = None
    except ReconcileError as exc:
        outcome, error = None, exc.message
    finally:
        clear_profile(sandbox)
    seconds = time.monotonic() - started
    entries = sandbox.request_log.entries()
    writes = successful_writes(entries)
    keys = [k for _, _, k in writes]
    return {
        "outcome": outcome,
        "error": error,
        "seconds": seconds,
        "requests": len(entries),
        **fault_counts(entries),
        "retries": outcome.summary["retries"] if outcome else None,
        "writes": len(writes),
        "twice": len(keys) - len(set(keys)),
        "state": _state(sandbox),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--storm-seconds", type=float, default=10.0)
    parser.add_argument("--real-backoff", action="store_true")
    parser.add_argument("--jobs", default=",".join(sorted(JOBS)))
    args = parser.parse_args()
    configure_logging("error")
    header = (f"{'job':<24}{'profile':<16}{'requests':>9}{'retries':>8}{'429':>6}{'5xx':>6}"
              f"{'drops':>6}{'secs':>7}{'writes':>7}{'twice':>6}  same findings/state")  # fmt: skip
    print(header)
    with SandboxServer(SandboxConfig()) as sandbox, tempfile.TemporaryDirectory() as tmp:
        for job in args.jobs.split(","):
            baseline: dict[str, Any] | None = None
            for name, profile in PROFILES.items():
                folder = Path(tmp) / f"{job}-{name}"
                folder.mkdir()
                row = _one(sandbox, job, profile, args, folder)
                if baseline is None:
                    baseline = row
                same_findings = row["outcome"] is not None and findings_key(
                    row["outcome"].findings
                ) == findings_key(baseline["outcome"].findings)
                same = f"{same_findings}/{row['state'] == baseline['state']}"
                if row["error"]:
                    same = f"FAILED: {row['error'][:60]}"
                print(f"{job:<24}{name:<16}{row['requests']:>9}{row['retries'] or 0:>8}"
                      f"{row['rate_limited']:>6}{row['server_errors']:>6}{row['dropped']:>6}"
                      f"{row['seconds']:>7.1f}{row['writes']:>7}{row['twice']:>6}  {same}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
