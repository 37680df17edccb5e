"""The small maintenance world on the session sandbox, rebuilt for each test."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.runner import SandboxServer
from tests.maintenance.world import MaintenanceWorld, build


@pytest.fixture
def mworld(sandbox_server: SandboxServer, tmp_path: Path) -> MaintenanceWorld:
    return build(sandbox_server, tmp_path, f"sqlite:///{tmp_path / 'users.db'}")


@pytest.fixture
def live_world(sandbox_server: SandboxServer, tmp_path: Path) -> MaintenanceWorld:
    return build(sandbox_server, tmp_path, f"sqlite:///{tmp_path / 'users.db'}", mode="live")
