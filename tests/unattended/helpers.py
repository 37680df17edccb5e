"""Shared by the unattended tests: a config file for a seeded world, the console script."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sandbox.runner import SandboxServer
from tests.seeded import TEST_KEY, SeededWorld

SCRIPT = Path(sys.executable).with_name("stripe-reconcile")


def write_config(world: SeededWorld, tmp_path: Path, extra: str = "") -> Path:
    settings = world.settings
    text = (
        "[userdb]\n"
        f'url = "{settings.userdb.url}"\n'
        'scope = { env = "prod" }\n'
        "[state]\n"
        f'url = "{settings.state.url}"\n'
        "[reports]\n"
        f'out = "{tmp_path / "out"}"\n'
        f"{extra}"
    )
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def env_for(world: SeededWorld) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE")}
    return {**env, "STRIPE_SECRET_KEY": TEST_KEY, "STRIPE_API_BASE": world.sandbox.url}


def list_requests(sandbox: SandboxServer) -> int:
    return sum(
        1
        for e in sandbox.request_log.entries()
        if e.method == "GET" and e.path == "/v1/customers" and e.status == 200
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def start(args: list[str], world: SeededWorld) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(world),
    )
