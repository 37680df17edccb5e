"""Shared rate budget benchmark: runs side by side, processes sharing Redis, Stripe's refusals.

Usage: .venv/bin/python bench/shared_limit_bench.py [--customers N] [--redis-url URL]
                                                    [--only two-runs|four-processes|refusals]
                                                    [--baseline]

It starts the sandbox in its own process with Stripe's test-mode limits (25 requests a
second account-wide and per endpoint, 20 for search), seeded with N customers and the
matching users database, and runs `card-expiry --all-cards` (one request per customer,
so work always waits on the limiter) with the default `[stripe] limit_share` of 0.8:
  two-runs        two runs side by side in this process (as `serve` runs jobs due together)
  four-processes  four `stripe-reconcile run` processes sharing `[stripe] limiter_url`
  refusals        one run against a sandbox that also refuses 30 % of requests with a 429,
                  naming each `Stripe-Rate-Limited-Reason` in turn (and none)
`--baseline` adds the same scenarios as before this limiter: a limiter per run at Stripe's
whole limits, and four processes without `limiter_url`.

For each: wall time, requests, 429s, and per bucket (global, each endpoint) the requests a
second while work waited (from the first second of the work to its last) and the most in
any one-second window, against the limit and this tool's share of it; from the sandbox's
request log.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs.card_expiry_job import JOB as CARD_EXPIRY  # noqa: E402
from jobs.runner import build_gateway, execute_job, retry_policy  # noqa: E402
from reconcile.mode import Mode  # noqa: E402
from reconcile.settings import Settings, StateSettings, load_settings  # noqa: E402
from reconcile.stripe_api.endpoints import endpoint_of  # noqa: E402
from reconcile.stripe_api.gateway import StripeGateway  # noqa: E402
from reconcile.stripe_api.limiter import (  # noqa: E402
    DEFAULT_LIMIT_SHARE,
    GLOBAL_BUCKET,
    RequestLimiter,
    endpoint_bucket,
)
from reconcile.stripe_api.limiter_registry import clear_shared_limiters  # noqa: E402
from sandbox.seed import GROUND_TRUTH_CONFIG  # noqa: E402

KEY = "sk_test_" + "SharedLimitBench0123"
LIMIT = 25.0
REASONS = [
    "global-rate",
    "endpoint-rate",
    "global-concurrency",
    "endpoint-concurrency",
    "resource-specific",
    "",
]


def start_sandbox(customers: int, users_db: Path) -> tuple[subprocess.Popen[str], str]:
    program = textwrap.dedent(
        f"""
        from sandbox.runner import SandboxConfig, serve_forever
        serve_forever(SandboxConfig(port=0, seed_customers={customers}, seed=1,
                                    users_db={str(users_db)!r}, max_log_entries=100_000))
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", program], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("Stripe sandbox listening on "):
        process.kill()
        raise RuntimeError(f"the sandbox did not start: {line!r}")
    return process, line.rsplit(" ", 1)[-1]


def admin(url: str, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}/_sandbox/{route}", data=data, method=method)
    request.add_header("Authorization", f"Bearer {KEY}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def settings_for(url: str, users_db: Path, work: Path) -> Settings:
    base = load_settings(None, env={"STRIPE_SECRET_KEY": KEY, "STRIPE_API_BASE": url})
    return base.model_copy(
        update={
            "userdb": base.userdb.model_copy(
                update={"url": f"sqlite:///{users_db}", "scope": GROUND_TRUTH_CONFIG["scope"]}
            ),
            "state": StateSettings(url=f"sqlite:///{work / 'state.db'}"),
            "reports": base.reports.model_copy(update={"out": work / "out"}),
        }
    )


def max_in_window(times: list[float]) -> int:
    ordered = sorted(times)
    return max(
        (bisect.bisect_right(ordered, t + 1.0) - i for i, t in enumerate(ordered)), default=0
    )


def figures(url: str) -> dict[str, Any]:
    """Per bucket, from the sandbox's request log: rate while busy, most in one second."""
    log = [e for e in admin(url, "GET", "requests?limit=100000")["data"] if e["mode"]]
    statuses = Counter(e["status"] for e in log)
    admitted = [e for e in log if e["status"] != 429]
    times = sorted(e["time"] for e in log)
    begin, end = times[0] + 1.0, times[-1] - 1.0
    buckets: dict[str, list[float]] = defaultdict(list)
    for entry in admitted:
        buckets[GLOBAL_BUCKET].append(entry["time"])
        buckets[endpoint_bucket(endpoint_of(entry["method"], entry["path"]))].append(entry["time"])
    per_bucket = {
        name: {
            "requests": len(instants),
            "rate_while_busy": round(
                sum(begin <= t < end for t in instants) / max(end - begin, 1e-9), 1
            ),
            "max_in_one_second": max_in_window(instants),
        }
        for name, instants in sorted(buckets.items())
    }
    return {
        "requests": len(log),
        "answers_429": statuses.get(429, 0),
        "seconds": round(times[-1] - times[0], 1),
        "buckets": per_bucket,
    }


def run_side_by_side(settings: Settings, work: Path, *, shared: bool) -> list[int]:
    """Two card scans in this process; shared: the project's limiters (one per account),
    else one per run at Stripe's whole limits (as before)."""
    clear_shared_limiters()

    def per_run(s: Settings) -> StripeGateway:
        limiter = RequestLimiter.for_mode(Mode.TEST)
        return StripeGateway(
            s.require_key(), api_base=s.stripe.api_base, limiter=limiter, policy=retry_policy(s)
        )

    codes: list[int] = []

    def run(n: int) -> None:
        own = work / f"run{n}"
        own.mkdir()
        run_settings = settings.model_copy(
            update={"state": StateSettings(url=f"sqlite:///{own / 'state.db'}")}
        )
        try:
            outcome = execute_job(
                CARD_EXPIRY,
                run_settings,
                out_dir=own / "out",
                options={"all_cards": True},
                gateway_factory=build_gateway if shared else per_run,
            )
            codes.append(outcome.exit_code)
        except Exception as exc:  # a figure of the bench, not a crash of it
            codes.append(getattr(exc, "exit_code", 70))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes


def run_processes(url: str, users_db: Path, work: Path, redis_url: str | None) -> list[int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE")}
    env.update({"STRIPE_SECRET_KEY": KEY, "STRIPE_API_BASE": url})
    script = Path(sys.executable).with_name("stripe-reconcile")
    processes = []
    for n in range(4):
        own = work / f"pod{n}"
        own.mkdir()
        limiter = f'[stripe]\nlimiter_url = "{redis_url}"\n' if redis_url else ""
        config = own / "config.toml"
        config.write_text(
            f'[userdb]\nurl = "sqlite:///{users_db}"\nscope = {{ env = "prod" }}\n'
            f'[state]\nurl = "sqlite:///{own / "state.db"}"\n'
            f'[reports]\nout = "{own / "out"}"\n{limiter}'
        )
        processes.append(
            subprocess.Popen(
                [str(script), "run", "card-expiry", "--all-cards", "--config", str(config)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    codes = []
    for process in processes:
        _, stderr = process.communicate(timeout=900)
        if process.returncode not in (0, 1):
            print(stderr.strip().splitlines()[-1] if stderr.strip() else "", file=sys.stderr)
        codes.append(process.returncode)
    return codes


def run_refusing(settings: Settings, url: str, work: Path, reason: str) -> dict[str, Any]:
    clear_shared_limiters()
    admin(url, "POST", "config", {"faults": {"rate_limit_rate": 0.3, "rate_limit_reason": reason}})
    factors: list[float] = []
    gateways: list[StripeGateway] = []

    def watched(s: Settings) -> StripeGateway:
        gateway = build_gateway(s)
        gateways.append(gateway)
        return gateway

    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            if gateways:
                limiter = gateways[0].limiter
                factors.append(
                    min(
                        limiter.rate_factor(GLOBAL_BUCKET),
                        limiter.rate_factor(endpoint_bucket(CARDS_ENDPOINT)),
                    )
                )

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        outcome = execute_job(
            CARD_EXPIRY,
            settings.model_copy(
                update={
                    "state": StateSettings(url=f"sqlite:///{work / 'state.db'}"),
                    # More tries than the default 5: three in ten requests are refused.
                    "stripe": settings.stripe.model_copy(update={"max_retries": 10}),
                }
            ),
            out_dir=work / "out",
            options={"all_cards": True},
            gateway_factory=watched,
        )
        code = outcome.exit_code
    except Exception as exc:  # a figure of the bench
        code = getattr(exc, "exit_code", 70)
    finally:
        stop.set()
        sampler.join()
        admin(url, "POST", "config", {"faults": {"rate_limit_rate": 0.0}})
    return {"exit": code, "lowest_factor": round(min(factors, default=1.0), 2)}


CARDS_ENDPOINT = "GET /v1/customers/{id}/payment_methods"


def show(name: str, codes: Any, found: dict[str, Any], extra: str = "") -> None:
    share = LIMIT * DEFAULT_LIMIT_SHARE
    print(
        f"{name}: exit {codes}, {found['requests']} requests in {found['seconds']} s, "
        f"{found['answers_429']} answered 429{extra}"
    )
    for bucket, numbers in found["buckets"].items():
        print(
            f"    {bucket:<48} {numbers['rate_while_busy']:5.1f}/s while busy "
            f"({numbers['rate_while_busy'] / share:4.0%} of the share {share:g}, "
            f"{numbers['rate_while_busy'] / LIMIT:4.0%} of the limit {LIMIT:g}); "
            f"most in one second {numbers['max_in_one_second']}"
        )
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--only", choices=["two-runs", "four-processes", "refusals"])
    parser.add_argument("--baseline", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shared-limit-bench-") as tmp:
        work = Path(tmp)
        users_db = work / "users.db"
        sandbox, url = start_sandbox(args.customers, users_db)
        settings = settings_for(url, users_db, work)
        print(
            f"{args.customers} customers; Stripe's test limits {LIMIT:g}/s; share "
            f"{DEFAULT_LIMIT_SHARE:g}; load {os.getloadavg()[0]:.1f}"
        )
        try:
            scenario = 0

            def fresh() -> Path:
                nonlocal scenario
                scenario += 1
                folder = work / f"s{scenario}"
                folder.mkdir()
                admin(url, "DELETE", "requests")
                # Stripe's windows of the previous scenario are over.
                time.sleep(1.5)
                return folder

            if args.only in (None, "two-runs"):
                if args.baseline:
                    codes = run_side_by_side(settings, fresh(), shared=False)
                    show("two runs, a limiter each (before)", codes, figures(url))
                codes = run_side_by_side(settings, fresh(), shared=True)
                show("two runs, one limiter", codes, figures(url))
            if args.only in (None, "four-processes"):
                if args.baseline:
                    codes = run_processes(url, users_db, fresh(), None)
                    show("four processes, no limiter_url (before)", codes, figures(url))
                codes = run_processes(url, users_db, fresh(), args.redis_url)
                show("four processes, limiter_url", codes, figures(url))
            if args.only in (None, "refusals"):
                for reason in REASONS:
                    result = run_refusing(settings, url, fresh(), reason)
                    show(
                        f"30% refused, reason {reason or '(none)'!r}",
                        result["exit"],
                        figures(url),
                        f", lowest rate factor {result['lowest_factor']}",
                    )
        finally:
            sandbox.terminate()
            sandbox.wait(timeout=30)


if __name__ == "__main__":
    main()
