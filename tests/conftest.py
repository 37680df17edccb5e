"""Fixtures shared by the whole suite: real database servers, found or skipped with the reason."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog

from sandbox.runner import SandboxConfig, SandboxServer
from tests.seeded import SeededWorld, build_world


@pytest.fixture(autouse=True)
def _structlog_configuration_restored() -> Iterator[None]:
    # The CLI and some tests configure structlog for the whole process (a level of
    # "error", a stream): a later test that captures warnings must not depend on the order.
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)

POSTGRES_URL = os.environ.get(
    "STRIPE_RECONCILE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_unreachable_reason() -> str | None:
    try:
        engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect means: skip, and say why
        return f"PostgreSQL not reachable at {POSTGRES_URL} ({type(exc).__name__})"
    return None


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    reason = _postgres_unreachable_reason()
    if reason is not None:
        pytest.skip(reason)
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A PostgreSQL URL whose default schema is a fresh one, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_server_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    sep = "&" if "?" in postgres_server_url else "?"
    yield f"{postgres_server_url}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'drop schema "{schema}" cascade'))
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/db.sqlite"  # type: ignore[str-bytes-safe]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """Both engines, for tests that must hold on SQLite and PostgreSQL alike."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db.sqlite"  # type: ignore[str-bytes-safe]
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """One sandbox for the session; `world` resets it for each test."""
    with SandboxServer(SandboxConfig()) as server:
        yield server


@pytest.fixture
def world(sandbox_server: SandboxServer, tmp_path: Path) -> SeededWorld:
    """A seeded sandbox account and its SQLite users database."""
    return build_world(sandbox_server, tmp_path, f"sqlite:///{tmp_path / 'users.db'}", seed=1)
