"""Starting and stopping: in-process on a thread, and in the foreground with signals."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import requests

from sandbox.ratelimit import RateLimits
from sandbox.runner import SandboxConfig, SandboxServer
from tests.sandbox.conftest import TEST_KEY


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_start_stop_frees_the_port_and_can_restart() -> None:
    server = SandboxServer(SandboxConfig(limits=RateLimits(enabled=False))).start()
    port = server.port
    assert server.url == f"http://127.0.0.1:{port}"
    assert _port_open(port)
    server.stop()
    assert not _port_open(port)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    server.stop()  # a second stop is harmless
    with SandboxServer() as again:
        assert requests.get(again.url + "/_sandbox/health", timeout=5).json()["ok"] is True


def test_start_reports_a_port_in_use() -> None:
    with SandboxServer() as first:
        second = SandboxServer(SandboxConfig(port=first.port))
        with pytest.raises(OSError, match="address already in use"):
            second.start()


def test_seed_customers_at_start() -> None:
    from sandbox.seed import MIN_CUSTOMERS

    count = max(200, MIN_CUSTOMERS)
    config = SandboxConfig(seed_customers=count, seed=3, limits=RateLimits(enabled=False))
    with SandboxServer(config) as server:
        assert server.store.count("test") > 0
        body = requests.get(
            server.url + "/v1/customers",
            params={"limit": 100},
            headers={"Authorization": f"Bearer {TEST_KEY}"},
            timeout=5,
        ).json()
        assert len(body["data"]) == 100
        assert body["has_more"] is True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_forever_prints_the_url_and_stops_cleanly_on_a_signal(signum: int) -> None:
    program = textwrap.dedent(
        """
        from sandbox.runner import SandboxConfig, serve_forever
        serve_forever(SandboxConfig(port=0, latency_ms=1))
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("Stripe sandbox listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[-1]
        response = requests.get(
            url + "/v1/customers", headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=5
        )
        assert response.status_code == 200
        process.send_signal(signum)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "stopped" in out
