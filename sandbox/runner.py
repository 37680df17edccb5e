"""Run the sandbox: in-process on a background thread (tests, demo, benchmarks) or in the
foreground until SIGINT/SIGTERM (the `stripe-reconcile sandbox` command)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aiohttp import web

from sandbox.clock import SandboxClock
from sandbox.events import EventFaults
from sandbox.faults import FaultInjector
from sandbox.loading import load_account
from sandbox.ratelimit import RateLimits
from sandbox.requestlog import RequestLog
from sandbox.server import SandboxState, build_app
from sandbox.store import SandboxStore

__all__ = ["RateLimits", "SandboxClock", "SandboxConfig", "SandboxServer", "serve_forever"]

_START_TIMEOUT_SECONDS = 30.0


@dataclass
class SandboxConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    limits: RateLimits = field(default_factory=RateLimits)
    seed_customers: int = 0  # > 0: seed test mode with generate_account(n, seed=seed) at start
    seed: int = 0
    error_rate: float = 0.0  # probability of an injected 500
    rate_limit_rate: float = 0.0  # probability of an injected 429
    drop_rate: float = 0.0  # probability of a dropped connection
    # The share of those random 500s and drops that strike after the request executed.
    after_apply_share: float = 0.0
    fault_seed: int | None = None
    max_log_entries: int = 1_000_000
    # With seed_customers: where to write the matching users database (a SQLAlchemy URL or
    # a SQLite path) and the ground truth (the planted anomalies, as JSON).
    users_db: str | None = None
    ground_truth_path: Path | None = None
    # The base time source of the sandbox's clock (default: the wall clock); the clock adds
    # an offset to it that `SandboxServer.clock.advance()` and `/_sandbox/clock` move.
    clock: Callable[[], float] | None = None


def _state_for(config: SandboxConfig, say: Callable[[str], None] | None = None) -> SandboxState:
    """The seeded state; `say` hears one line on what became of the users database."""
    state = SandboxState(
        store=SandboxStore(SandboxClock(config.clock or time.time)),
        request_log=RequestLog(config.max_log_entries),
        faults=FaultInjector(
            config.error_rate,
            config.rate_limit_rate,
            config.drop_rate,
            seed=config.fault_seed,
            after_apply_share=config.after_apply_share,
        ),
        limits=config.limits,
        latency_ms=config.latency_ms,
        jitter_ms=config.jitter_ms,
    )
    if config.seed_customers > 0:
        from sandbox.seed import generate_account, write_ground_truth, write_users_db

        # The account's "now" is the sandbox's, so its history sits in the events' window.
        now = int(state.store.clock())
        account = generate_account(config.seed_customers, seed=config.seed, now=now)
        load_account(state.store, "test", account)
        if config.users_db:
            from sandbox.seed import users_db_shown

            reseeded = write_users_db(account, config.users_db)
            if say is not None:
                verb = "reseeded (an earlier sandbox run wrote it)" if reseeded else "written"
                shown = users_db_shown(config.users_db)
                say(f"users table in {shown}: {verb}, {len(account.users)} users")
        if config.ground_truth_path is not None:
            write_ground_truth(account, config.ground_truth_path)
    return state


async def _start_site(state: SandboxState, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(build_app(state), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = site._server.sockets if site._server is not None else ()  # type: ignore[attr-defined]
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)


class SandboxServer:
    """The sandbox on its own event loop in a daemon thread.

    `limits`, `latency_ms` and `jitter_ms` are read per request, so tests may change them
    (or mutate `limits`) while it runs.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self._state = _state_for(self.config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0

    # --- runtime-settable views of the state -------------------------------------------
    @property
    def store(self) -> SandboxStore:
        return self._state.store

    @property
    def request_log(self) -> RequestLog:
        return self._state.request_log

    @property
    def faults(self) -> FaultInjector:
        return self._state.faults

    @property
    def event_faults(self) -> EventFaults:
        """How the next events go wrong: `delay_next`, `backdate_next`, `drop_next`,
        `configure` (random rates); see sandbox/events.py."""
        return self._state.store.event_faults

    @property
    def clock(self) -> SandboxClock:
        """The sandbox's time (idempotency keys expire after 24 hours of it; new objects
        are `created` by it): `clock.advance(86_400)` moves it a day forward."""
        return self._state.store.clock

    @property
    def state(self) -> SandboxState:
        return self._state

    @property
    def limits(self) -> RateLimits:
        return self._state.limits

    @limits.setter
    def limits(self, value: RateLimits) -> None:
        self._state.limits = value
        self._state.limiter.clear()

    @property
    def latency_ms(self) -> float:
        return self._state.latency_ms

    @latency_ms.setter
    def latency_ms(self, value: float) -> None:
        self._state.latency_ms = value

    @property
    def jitter_ms(self) -> float:
        return self._state.jitter_ms

    @jitter_ms.setter
    def jitter_ms(self, value: float) -> None:
        self._state.jitter_ms = value

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the sandbox is not running: call start() first")
        return f"http://{self.config.host}:{self.port}"

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> SandboxServer:
        """Return once the port accepts connections; raise what stopped it otherwise."""
        if self._thread is not None:
            raise RuntimeError("the sandbox is already running")
        self._thread = threading.Thread(target=self._run, name="stripe-sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_SECONDS):
            raise RuntimeError(f"the sandbox did not start within {_START_TIMEOUT_SECONDS:.0f} s")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as error:  # reported to start(), which re-raises it
            self._error = error
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        runner, self.port = await _start_site(self._state, self.config.host, self.config.port)
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        """Close the listening socket and open connections, then join the thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stopping.set)
        thread.join()
        self._thread = None
        self.port = 0

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_forever(config: SandboxConfig) -> None:
    """Serve in the foreground; print the URL once listening; SIGINT/SIGTERM stop cleanly."""
    said: list[str] = []
    state = _state_for(config, said.append)
    # The seeded store lives as long as the server: out of the collector's sight, so a
    # full collection walks only what requests make, not a million customers (each such
    # walk held every answer back and sent them in bursts).
    gc.freeze()

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        runner, port = await _start_site(state, config.host, config.port)
        # The URL comes first: scripts read it from the first line.
        print(f"Stripe sandbox listening on http://{config.host}:{port}", flush=True)
        for line in said:
            print(line, flush=True)
        try:
            await stopping.wait()
        finally:
            await runner.cleanup()
            print("Stripe sandbox stopped", flush=True)

    asyncio.run(main())
