"""Fixtures of the reliability suite: a small seeded world per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.runner import SandboxServer
from tests.seeded import SeededWorld, build_world


@pytest.fixture
def small_world(sandbox_server: SandboxServer, tmp_path: Path) -> SeededWorld:
    """120 customers with every kind of anomaly planted, and their SQLite users table."""
    sandbox_server.faults.clear()
    sandbox_server.state.revoked_keys.clear()
    sandbox_server.state.read_only_keys.clear()
    world = build_world(
        sandbox_server, tmp_path, f"sqlite:///{tmp_path / 'users.db'}", seed=3, customers=120
    )
    return world
