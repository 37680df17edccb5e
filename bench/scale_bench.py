"""Scale benchmark: is the rate limiter, not Stripe's latency, what bounds a run?

Usage: .venv/bin/python bench/scale_bench.py [--customers N] [--card-customers M]
                                             [--limit-share 0.8] [--latency-ms 300 --jitter-ms 100]

It starts the sandbox in its OWN process (so the client and the server do not share one
interpreter's lock), seeded with N customers (default 100,000; `--customers 20000` for
the small case) and the matching users database, answering after 300 +/- 100 ms and
enforcing Stripe's test-mode rate limits; the client's limiter takes `--limit-share` of
each of them (default: the configuration's default share). It then runs, with the
project's own runner:
  reconcile (N customers, the account's first listing: nothing known of its shape),
  reconcile again (the next run: its listing cut by the last one's shape, as every run
  after the first is), card-expiry (N customers, default cards; also planned) and
  card-expiry --all-cards (a second sandbox with M customers: one request per customer,
  so M stays small; at 25/s 100k customers would take 70 minutes).
Each run is a process of its own. Per run it prints the requests sent, the wall time, the
floor (for each limiter bucket, the requests that count against it divided by its
sustained rate; the largest), wall divided by floor, then the listing alone (its pages,
its wall, its wall divided by the floor of its pages, and by the floor at the nominal
limit, `/limit`, which no client could beat: the limiter keeps a few percent under it),
the 429s received and the run's peak RSS. The fewest pages a listing can take is
customers / 100, rounded up: `pages/min` is the listing's pages against it. Last, the
time from `stripe-reconcile run reconcile` starting (the process, as cron starts it) to
its first request reaching the sandbox.
`--profile DIR` samples every thread of each run with py-spy (pip install py-spy).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs.base import Job  # noqa: E402
from jobs.card_expiry_job import JOB as CARD_EXPIRY  # noqa: E402
from jobs.reconcile_job import JOB as RECONCILE  # noqa: E402
from jobs.runner import execute_job, retry_policy  # noqa: E402
from reconcile.mode import Mode  # noqa: E402
from reconcile.settings import Settings, StateSettings, load_settings  # noqa: E402
from reconcile.stripe_api.gateway import StripeGateway  # noqa: E402
from reconcile.stripe_api.limiter import (  # noqa: E402
    DEFAULT_LIMIT_SHARE,
    MODE_LIMITS,
    PER_ENDPOINT_LIMIT,
    SEARCH_LIMIT,
    RequestLimiter,
    bucket_shape,
    check_limit_share,
    is_search_endpoint,
)
from sandbox.seed import GROUND_TRUTH_CONFIG  # noqa: E402

PROFILE_DIR: Path | None = None
KEY = "sk_test_" + "ScaleBenchKey0123456789"


@dataclass(frozen=True)
class Limits:
    global_limit: float
    per_endpoint: float
    search: float

    def floor(self, by_endpoint: dict[str, int], *, nominal: bool = False) -> tuple[float, str]:
        """The largest (requests in a bucket / its sustained rate), and that bucket's name.

        The sustained rate is the limiter's (a few percent under the limit, its safety
        margin: see reconcile.stripe_api.limiter); `nominal` divides by the limit itself
        instead, the floor no client could beat.
        """

        def rate(limit: float) -> float:
            return limit if nominal else bucket_shape(limit).sustained_rate

        sustained = {
            "global": rate(self.global_limit),
            "endpoint": rate(self.per_endpoint),
            "search": rate(self.search),
        }
        candidates = [(sum(by_endpoint.values()) / sustained["global"], "global")]
        candidates += [(n / sustained["endpoint"], e) for e, n in by_endpoint.items()]
        searches = sum(n for e, n in by_endpoint.items() if is_search_endpoint(e))
        candidates.append((searches / sustained["search"], "search"))
        return max(candidates)


def limits_for(share: float) -> Limits:
    """This tool's part of Stripe's test-mode limits (the sandbox enforces the whole)."""
    return Limits(MODE_LIMITS[Mode.TEST] * share, PER_ENDPOINT_LIMIT * share, SEARCH_LIMIT * share)


def start_sandbox(
    customers: int, users_db: Path, *, latency_ms: float, jitter_ms: float
) -> tuple[subprocess.Popen[str], str]:
    # The `stripe-reconcile sandbox` command, with a users database and a longer log.
    program = textwrap.dedent(
        f"""
        from sandbox.runner import SandboxConfig, serve_forever
        serve_forever(SandboxConfig(
            port=0, latency_ms={latency_ms}, jitter_ms={jitter_ms},
            seed_customers={customers}, seed=1, users_db={str(users_db)!r},
            max_log_entries=10_000))
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


def _sandbox(settings: Settings, method: str, route: str) -> dict[str, Any]:
    """The sandbox's admin API (its request log)."""
    url = f"{settings.stripe.api_base}/_sandbox/{route}"
    request = urllib.request.Request(url, method=method)
    request.add_header("Authorization", f"Bearer {KEY}")
    with urllib.request.urlopen(request, timeout=60) as response:
        return dict(json.loads(response.read()))


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(
    name: str, job: Job, settings: Settings, limits: Limits, options: dict[str, Any]
) -> dict[str, Any]:
    def gateway(s: Settings) -> StripeGateway:
        limiter = RequestLimiter(
            limits.global_limit, per_endpoint_limit=limits.per_endpoint, search_limit=limits.search
        )
        return StripeGateway(
            s.require_key(), api_base=s.stripe.api_base, limiter=limiter, policy=retry_policy(s)
        )

    _sandbox(settings, "DELETE", "requests")
    started = time.perf_counter()
    outcome = execute_job(
        job, settings, out_dir=settings.reports.out, options=options, gateway_factory=gateway
    )
    wall = time.perf_counter() - started
    by_endpoint = dict(outcome.summary["requests_by_endpoint"])
    floor, bucket = limits.floor(by_endpoint)
    # The listing alone: its wall against the floor of its own requests (the pages).
    listing_s = float(outcome.summary.get("phase_seconds", {}).get("listing", 0.0))
    pages = {e: n for e, n in by_endpoint.items() if e == "GET /v1/customers"}
    listing_floor, _ = limits.floor(pages) if pages else (0.0, "")
    nominal_floor, _ = limits.floor(pages, nominal=True) if pages else (0.0, "")
    log = _sandbox(settings, "GET", "requests?limit=100000")["data"]
    first = min((e["time"] for e in log), default=0.0)
    refused = Counter(
        (
            e["path"].split("/")[2] if e["path"].count("/") > 2 else e["path"],
            round(e["time"] - first),
        )
        for e in log
        if e["status"] == 429
    )
    return {
        # Where the 429s fell: (endpoint, second of the run) -> count, for the diagnosis.
        "refused": {f"{k[0]}@{k[1]}s": n for k, n in sorted(refused.items())},
        "run": name,
        "customers": outcome.summary.get("customers_scanned", 0),
        "requests": sum(by_endpoint.values()),
        "wall_s": wall,
        "floor_s": floor,
        "bucket": bucket,
        "ratio": wall / floor if floor else float("nan"),
        "listing_s": listing_s,
        "phases": outcome.summary.get("phase_seconds", {}),
        "listing_requests": sum(pages.values()),
        "listing_ratio": listing_s / listing_floor if listing_floor else float("nan"),
        "listing_nominal_ratio": listing_s / nominal_floor if nominal_floor else float("nan"),
        "429s": outcome.summary.get("rate_limited", 0),
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_in_child(
    name: str,
    job: Job,
    url: str,
    users_db: Path,
    work: Path,
    share: float,
    options: dict[str, Any],
) -> dict[str, Any]:
    """One run in a fresh process, so its peak RSS is its own."""
    spec = {
        "name": name,
        "job": job.name,
        "url": url,
        "users_db": str(users_db),
        "work": str(work),
        "share": share,
        "options": options,
    }
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    if PROFILE_DIR is not None:
        # Every thread of the run, sampled by py-spy (pyinstrument sees one thread only).
        label = name.replace(" ", "")
        command = [
            *("py-spy", "record", "--format", "raw", "--rate", "250", "--nonblocking"),
            *("--output", str(PROFILE_DIR / f"{label}.folded"), "--"),
            *command,
        ]
    done = subprocess.run(
        command,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    # py-spy may print its own lines after the child's result.
    result = [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
    return dict(json.loads(result))


def child(spec: dict[str, Any]) -> None:
    jobs = {RECONCILE.name: RECONCILE, CARD_EXPIRY.name: CARD_EXPIRY}
    settings = settings_for(spec["url"], Path(spec["users_db"]), Path(spec["work"]))
    # The job's logs go to stderr; stdout carries the result alone.
    with contextlib.redirect_stdout(sys.stderr):
        result = run_one(
            spec["name"], jobs[spec["job"]], settings, limits_for(spec["share"]), spec["options"]
        )
    print(json.dumps(result))


def first_request_seconds(url: str, users_db: Path, work: Path) -> float:
    """Seconds from `stripe-reconcile run reconcile` starting to its first request at the
    sandbox; the run is stopped there."""
    config = work / "first-request.toml"
    config.write_text(
        f'[stripe]\napi_base = "{url}"\n'
        f'[userdb]\nurl = "sqlite:///{users_db}"\n'
        f'[state]\nurl = "sqlite:///{work / "first-request.db"}"\n'
        f'[reports]\nout = "{work / "first-request-out"}"\n'
    )
    program = str(Path(sys.executable).parent / "stripe-reconcile")
    environment = {"STRIPE_SECRET_KEY": KEY, "PATH": "/usr/bin:/bin"}
    _sandbox_at(url, "DELETE", "requests")
    started = time.time()
    process = subprocess.Popen(
        [program, "run", "reconcile", "--config", str(config)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while process.poll() is None and time.time() - started < 60:
            entries = _sandbox_at(url, "GET", "requests?limit=5")["data"]
            if entries:
                return float(min(e["time"] for e in entries)) - started
            time.sleep(0.02)
        raise RuntimeError("run reconcile sent no request within 60 s")
    finally:
        process.terminate()
        process.wait(timeout=30)


def _sandbox_at(url: str, method: str, route: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/_sandbox/{route}", method=method)
    request.add_header("Authorization", f"Bearer {KEY}")
    with urllib.request.urlopen(request, timeout=60) as response:
        return dict(json.loads(response.read()))


def variant(
    share: float,
    customers: int,
    card_customers: int,
    latency_ms: float,
    jitter_ms: float,
    only: set[str] | None = None,
) -> list[dict[str, Any]]:
    label = f"Stripe x{share:g}"
    results = []
    plan: list[tuple[int, list[tuple[str, Job, dict[str, Any]]]]] = [
        (
            customers,
            [
                # The account's first listing: nothing known of it, windows cut on the way.
                ("reconcile", RECONCILE, {}),
                # The next runs: cut where the last listing's shape says windows end on
                # full pages (reconcile.rules.listing_plan).
                ("reconcile again", RECONCILE, {}),
                ("card-expiry", CARD_EXPIRY, {}),
            ],
        ),
        (card_customers, [("card-expiry --all-cards", CARD_EXPIRY, {"all_cards": True})]),
    ]
    if only:
        plan = [(size, [r for r in runs if r[0] in only]) for size, runs in plan]
    for size, runs in plan:
        if not runs:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            users_db = work / "users.db"
            seeding = time.perf_counter()
            process, url = start_sandbox(size, users_db, latency_ms=latency_ms, jitter_ms=jitter_ms)
            print(
                f"  [{label}] sandbox with {size:,} customers up in "
                f"{time.perf_counter() - seeding:.1f}s",
                file=sys.stderr,
                flush=True,
            )
            try:
                for name, job, options in runs:
                    result = run_in_child(name, job, url, users_db, work, share, options)
                    result["limits"] = label
                    results.append(result)
                    print(f"  {_row(result)}", file=sys.stderr, flush=True)
                    phases = ", ".join(f"{k} {v:.2f}s" for k, v in result["phases"].items())
                    print(f"    phases: {phases}", file=sys.stderr, flush=True)
                    if result["refused"]:
                        print(f"    429s at: {result['refused']}", file=sys.stderr, flush=True)
                if any(name == "reconcile" for name, _job, _options in runs):
                    seconds = first_request_seconds(url, users_db, work)
                    print(
                        f"  run reconcile: first request {seconds:.2f}s after the process started",
                        file=sys.stderr,
                        flush=True,
                    )
            finally:
                process.terminate()
                process.wait(timeout=60)
    return results


_HEADER = (
    f"{'limits':14}{'run':26}{'customers':>10}{'requests':>10}{'wall s':>9}{'floor s':>9}"
    f"{'wall/floor':>11}{'pages':>7}{'pages/min':>10}{'listing s':>10}{'listing/floor':>14}"
    f"{'/limit':>7}{'429s':>6}{'peak RSS MB':>13}  bucket"
)


def _row(r: dict[str, Any]) -> str:
    fewest = max(1, math.ceil(r["customers"] / 100))
    return (
        f"{r.get('limits', ''):14}{r['run']:26}{r['customers']:>10,}{r['requests']:>10,}"
        f"{r['wall_s']:>9.1f}{r['floor_s']:>9.1f}{r['ratio']:>11.3f}{r['listing_requests']:>7,}"
        f"{r['listing_requests'] / fewest:>10.3f}"
        f"{r['listing_s']:>10.1f}{r['listing_ratio']:>14.3f}{r['listing_nominal_ratio']:>7.3f}"
        f"{r['429s']:>6}"
        f"{r['peak_rss_mb']:>13,.0f}  {r['bucket']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--card-customers", type=int, default=5_000)
    parser.add_argument("--latency-ms", type=float, default=300.0, help="mean answer time")
    parser.add_argument("--jitter-ms", type=float, default=100.0, help="+/- around the mean")
    parser.add_argument(
        "--limit-share",
        type=float,
        default=DEFAULT_LIMIT_SHARE,
        help="this tool's part of each of Stripe's limits (the configuration's default)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=["reconcile", "reconcile again", "card-expiry", "card-expiry --all-cards"],
        help="run only these (repeatable); default: all three",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample each run with py-spy (pip install py-spy) into DIR/<run>.folded",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile:
        global PROFILE_DIR
        PROFILE_DIR = args.profile.resolve()
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(json.loads(args.child))
        return
    if args.jitter_ms > args.latency_ms:
        parser.error("--jitter-ms must not exceed --latency-ms")
    check_limit_share(args.limit_share)
    # The sandbox adds latency_ms plus a uniform 0..jitter_ms: centre it on the mean.
    low, spread = args.latency_ms - args.jitter_ms, 2 * args.jitter_ms
    results = variant(
        args.limit_share,
        args.customers,
        args.card_customers,
        low,
        spread,
        set(args.only or ()),
    )
    print(_HEADER)
    for result in results:
        print(_row(result))


if __name__ == "__main__":
    main()
