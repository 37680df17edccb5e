from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.ratelimit import RateLimits
from sandbox.runner import SandboxConfig, SandboxServer
from tests.incremental.world import World, build_world


@pytest.fixture(scope="module")
def events_sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(limits=RateLimits(enabled=False))) as server:
        yield server


@pytest.fixture
def world(events_sandbox: SandboxServer, tmp_path: Path) -> World:
    return build_world(events_sandbox, tmp_path)
