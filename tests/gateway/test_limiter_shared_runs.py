"""One rate budget per account: runs side by side in a process, and processes sharing Redis.

Against the sandbox with Stripe's test-mode limits on (25/s global and per endpoint) and
the default share (0.8: 20/s for this tool). Done when: no answer of 429, and together
at least 85% of the share used while work waits, measured from the sandbox's request log.
Timing tests on a shared machine: bounds, not exact values.
"""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.card_expiry_job import JOB as CARD_EXPIRY
from jobs.runner import RunOutcome, build_gateway, execute_job
from reconcile.settings import Settings
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter_registry import account_of, clear_shared_limiters
from sandbox.requestlog import RequestRecord
from sandbox.runner import SandboxConfig, SandboxServer
from tests.gateway.test_limiter import max_in_any_window
from tests.gateway.test_limiter_redis import REDIS_URL, forget_namespace, redis_or_skip
from tests.seeded import TEST_KEY, SeededWorld, build_world
from tests.unattended.helpers import SCRIPT, env_for, write_config

# Throughput against the real clock: run alone, not beside another test worker.
pytestmark = pytest.mark.serial

SHARE_OF_TEST_LIMIT = 25 * 0.8


@pytest.fixture
def limited_sandbox() -> Iterator[SandboxServer]:
    """Stripe's test-mode limits on (the config's default)."""
    with SandboxServer(SandboxConfig()) as sandbox:
        yield sandbox


def answered(sandbox: SandboxServer) -> list[RequestRecord]:
    return [e for e in sandbox.request_log.entries() if not e.path.startswith("/_sandbox")]


def busy_rate(records: list[RequestRecord]) -> float:
    """Requests a second between the first and the last second of the work."""
    times = sorted(r.time for r in records)
    begin, end = times[0] + 1.0, times[-1] - 1.0
    assert end - begin >= 5, "too little work to measure a rate"
    return sum(begin <= t < end for t in times) / (end - begin)


def own_state(world: SeededWorld, folder: Path) -> Settings:
    """The world's settings with a state database of their own (a run lock of their own)."""
    folder.mkdir()
    state = world.settings.state.model_copy(update={"url": f"sqlite:///{folder / 'state.db'}"})
    return world.settings.model_copy(update={"state": state})


def test_two_runs_in_one_process_share_one_budget(
    limited_sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Two card scans (`card-expiry --all-cards`, one request per customer) side by side,
    as `serve` runs jobs that are due together: one limiter, one budget."""
    world = build_world(
        limited_sandbox, tmp_path, f"sqlite:///{tmp_path / 'users.db'}", seed=5, customers=200
    )
    clear_shared_limiters()
    gateways: list[StripeGateway] = []

    def recorded_gateway(settings: Settings) -> StripeGateway:
        gateway = build_gateway(settings)
        gateways.append(gateway)
        return gateway

    outcomes: list[RunOutcome] = []
    failures: list[BaseException] = []

    def run(settings: Settings, out: Path) -> None:
        try:
            outcomes.append(
                execute_job(
                    CARD_EXPIRY,
                    settings,
                    out_dir=out,
                    options={"all_cards": True},
                    gateway_factory=recorded_gateway,
                )
            )
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [
        threading.Thread(
            target=run, args=(own_state(world, tmp_path / f"run{n}"), tmp_path / f"out{n}")
        )
        for n in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not failures, failures
    assert [o.exit_code for o in outcomes] == [0, 0]
    assert len(gateways) == 2
    assert gateways[0].limiter is gateways[1].limiter  # one budget for the account
    records = answered(limited_sandbox)
    sent = [sum(o.summary["requests_by_endpoint"].values()) for o in outcomes]
    assert min(sent) > 150  # both scanned every customer
    assert sum(sent) == len(records)
    assert Counter(r.status for r in records) == {200: len(records)}  # no 429 at all
    times = [r.time for r in records]
    assert max_in_any_window(times) <= 25  # Stripe's limit, with the app's part left
    rate = busy_rate(records)
    print(f"requests a second while work waited: {rate:.1f} of {SHARE_OF_TEST_LIMIT:g}")
    assert rate >= 0.85 * SHARE_OF_TEST_LIMIT


def test_four_processes_sharing_limiter_url_share_one_budget(
    limited_sandbox: SandboxServer, tmp_path: Path
) -> None:
    redis_client = redis_or_skip()
    world = build_world(
        limited_sandbox, tmp_path, f"sqlite:///{tmp_path / 'users.db'}", seed=6, customers=100
    )
    processes = []
    for n in range(4):
        # Each its own state and reports, as pods are: the same job runs four times.
        own = tmp_path / f"pod{n}"
        settings = own_state(world, own)
        config = write_config(
            SeededWorld(world.sandbox, world.account, world.users_url, settings),
            own,
            f'[stripe]\nlimiter_url = "{REDIS_URL}"\n',
        )
        processes.append(
            subprocess.Popen(
                [str(SCRIPT), "run", "card-expiry", "--all-cards", "--config", str(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env_for(world),
            )
        )
    try:
        results = [process.communicate(timeout=240) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        forget_namespace(redis_client, f"{account_of(TEST_KEY, world.sandbox.url)}:test")
    for process, (_, stderr) in zip(processes, results, strict=True):
        assert process.returncode == 0, stderr[-2000:]
    records = answered(limited_sandbox)
    cards = [r for r in records if r.path.endswith("/payment_methods")]
    # Every process scanned the same customers, once each.
    assert len(cards) > 4 * 80
    assert len(cards) % 4 == 0
    assert Counter(r.status for r in records) == {200: len(records)}  # no 429 at all
    times = [r.time for r in records]
    assert max_in_any_window(times) <= 25
    rate = busy_rate(records)
    print(f"requests a second while work waited: {rate:.1f} of {SHARE_OF_TEST_LIMIT:g}")
    assert rate >= 0.85 * SHARE_OF_TEST_LIMIT
