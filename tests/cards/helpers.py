"""Running the card-expiry job against a seeded world with a pinned clock and a fast limiter."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from jobs.registry import JOBS
from jobs.runner import AfterRun, RunOutcome, execute_job
from reconcile.settings import EmailSettings, Settings
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter import RequestLimiter
from tests.seeded import NOW, SeededWorld

SEEDED_NOW = datetime.fromtimestamp(NOW, UTC)


def fast_gateway(settings: Settings) -> StripeGateway:
    # The rate-limit guarantee is the limiter's own tests' business; here it only costs time.
    return StripeGateway(
        settings.require_key(),
        api_base=settings.stripe.api_base,
        limiter=RequestLimiter(2000, per_endpoint_limit=2000),
    )


@contextmanager
def unlimited_sandbox(world: SeededWorld) -> Iterator[None]:
    limits = world.sandbox.limits
    enabled = limits.enabled
    limits.enabled = False
    try:
        yield
    finally:
        limits.enabled = enabled


def with_email(settings: Settings, host: str, port: int, **overrides: Any) -> Settings:
    email = EmailSettings(
        to=["ops@example.com", "finance@example.com"],
        sender="reports@example.com",
        smtp_host=host,
        smtp_port=port,
        security="none",
        timeout_seconds=5,
        **overrides,
    )
    return settings.model_copy(update={"email": email})


def run_card_expiry(
    world: SeededWorld,
    settings: Settings | None = None,
    *,
    now: datetime = SEEDED_NOW,
    after_run: Sequence[AfterRun] = (),
    gateway_factory: Callable[[Settings], StripeGateway] = fast_gateway,
    **options: Any,
) -> RunOutcome:
    opts: Mapping[str, Any] = options
    return execute_job(
        JOBS["card-expiry"],
        settings or world.settings,
        options=opts,
        now=lambda: now,
        after_run=after_run,
        gateway_factory=gateway_factory,
    )
