"""The installed console script, as cron runs it: separate processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.seeded import TEST_KEY

SCRIPT = Path(sys.executable).with_name("stripe-reconcile")


@pytest.fixture
def sandbox_process(tmp_path: Path):  # type: ignore[no-untyped-def]
    command = [
        str(SCRIPT),
        "sandbox",
        "--port",
        "0",
        "--seed-customers",
        "300",
        "--seed",
        "5",
        "--users-db",
        str(tmp_path / "users.db"),
        "--ground-truth",
        str(tmp_path / "truth.json"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    first = process.stdout.readline().strip()
    assert first.startswith("Stripe sandbox listening on http://127.0.0.1:"), first
    yield process, first.rsplit(" ", 1)[1]
    if process.poll() is None:
        process.kill()
        process.wait()


def test_sandbox_serves_the_seeded_account_then_stops_on_sigterm(
    sandbox_process: tuple[subprocess.Popen[str], str], tmp_path: Path
) -> None:
    process, url = sandbox_process
    request = urllib.request.Request(
        f"{url}/v1/customers?limit=3", headers={"Authorization": f"Bearer {TEST_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        page = json.load(answer)
    assert page["object"] == "list"
    assert len(page["data"]) == 3
    assert page["has_more"] is True
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth

    env = {
        **os.environ,
        "STRIPE_SECRET_KEY": TEST_KEY,
        "STRIPE_API_BASE": url,
        "STRIPE_RECONCILE_CONFIG": "",
    }
    config = tmp_path / "config.toml"
    config.write_text(
        f'[userdb]\nurl = "sqlite:///{tmp_path / "users.db"}"\nscope = {{ env = "prod" }}\n'
        f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n'
        f'[reports]\nout = "{tmp_path / "out"}"\n'
    )
    run = subprocess.run(
        [str(SCRIPT), "--config", str(config), "run", "reconcile"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr
    run_dir = Path(run.stdout.strip().splitlines()[-1])
    assert (run_dir / "summary.json").is_file()
    for line in run.stderr.splitlines():  # not a terminal: JSON lines, no key, no email
        event = json.loads(line)
        assert event["job"] == "reconcile"
        assert TEST_KEY not in line
        assert "@" not in line

    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=20)
    assert process.returncode == 0
    assert "Stripe sandbox stopped" in out
