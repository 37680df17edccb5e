"""A fresh sandbox per test, SDK clients for both modes, and raw HTTP helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import stripe

from sandbox.ratelimit import RateLimits
from sandbox.runner import SandboxConfig, SandboxServer

TEST_KEY = "sk_test_sandboxTESTkey0001"
LIVE_KEY = "sk_live_sandboxLIVEkey0001"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    # Limits off by default: most tests are about behaviour, not pacing.
    config = SandboxConfig(limits=RateLimits(enabled=False))
    with SandboxServer(config) as server:
        yield server


def make_client(
    server: SandboxServer, key: str = TEST_KEY, retries: int = 0
) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": server.url}, max_network_retries=retries)


@pytest.fixture
def client(sandbox: SandboxServer) -> stripe.StripeClient:
    return make_client(sandbox)


@pytest.fixture
def live_client(sandbox: SandboxServer) -> stripe.StripeClient:
    return make_client(sandbox, LIVE_KEY)


Raw = Callable[..., requests.Response]


@pytest.fixture
def raw(sandbox: SandboxServer) -> Iterator[Raw]:
    """`raw(method, path, key=TEST_KEY, **requests_kwargs)` over plain HTTP."""
    session = requests.Session()

    def call(
        method: str, path: str, key: str | None = TEST_KEY, **kwargs: Any
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers.setdefault("Authorization", f"Bearer {key}")
        return session.request(method, sandbox.url + path, headers=headers, timeout=10, **kwargs)

    yield call
    session.close()


def customer_record(
    customer_id: str, created: int, *, email: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A record in the shape `SandboxStore.bulk_load` takes."""
    return {
        "id": customer_id,
        "created": created,
        "email": email,
        "name": fields.get("name"),
        "phone": fields.get("phone"),
        "description": fields.get("description"),
        "metadata": fields.get("metadata", {}),
        "default_payment_method": fields.get("default_payment_method"),
    }
