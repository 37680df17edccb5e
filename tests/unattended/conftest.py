"""A bigger seeded world with latency, so a listing can be stopped in its middle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.runner import SandboxServer
from tests.seeded import SeededWorld, build_world


@pytest.fixture
def slow_world(sandbox_server: SandboxServer, tmp_path: Path) -> Iterator[SeededWorld]:
    """3000 customers (about 30 list pages) answered after 60 ms each."""
    world = build_world(
        sandbox_server, tmp_path, f"sqlite:///{tmp_path / 'users.db'}", seed=3, customers=3000
    )
    sandbox_server.latency_ms = 60
    try:
        yield world
    finally:
        sandbox_server.latency_ms = 0
