"""`stripe-reconcile check`: every precondition of a run, one line each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from reconcile.errors import EXIT_OK, ReconcileError
from reconcile.gateway import StripeGateway
from reconcile.limiter import MODE_LIMITS
from reconcile.settings import Settings
from reconcile.userdb import UserDB, safe_url

__all__ = ["CheckResult", "run_checks"]


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    exit_code: int


def run_checks(
    settings: Settings,
    echo: Callable[[str], None],
    gateway_factory: Callable[[Settings], StripeGateway] | None = None,
) -> CheckResult:
    failures: list[ReconcileError] = []

    def failed(what: str, exc: ReconcileError) -> None:
        failures.append(exc)
        echo(f"FAIL  {what}: {exc.message}")

    try:
        key = settings.require_key()
        mode = settings.mode
    except ReconcileError as exc:
        failed("key", exc)
    else:
        from reconcile.mode import mask_key

        echo(f"ok    key {mask_key(key)} ({mode.value} mode)")
        echo(
            f"ok    rate limit {settings.max_requests_per_second():g} requests/s "
            f"(Stripe's {mode.value}-mode limit is {MODE_LIMITS[mode]:g}/s)"
        )
        api = settings.stripe.api_base or "https://api.stripe.com"
        try:
            from jobs.runner import build_gateway

            gateway = (gateway_factory or build_gateway)(settings)
            first = next(iter(gateway.list_customers(page_size=1)), None)
            if first is not None:
                gateway.confirm_mode(first)
            seen = "yes" if first is not None else "none yet"
            echo(f"ok    Stripe answers at {api} (customers visible: {seen})")
        except ReconcileError as exc:
            failed(f"Stripe at {api}", exc)

    try:
        userdb: UserDB | None = UserDB(settings.userdb)
    except ReconcileError as exc:
        failed("user database", exc)
        userdb = None
    if userdb is not None:
        try:
            info = userdb.inspect()
            echo(f"ok    user database {safe_url(settings.userdb.url)}")
            echo(
                f"ok    table {info.table}: {info.row_count} rows; columns used: "
                + ", ".join(userdb.used_columns())
            )
        except ReconcileError as exc:
            failed("user database", exc)
        finally:
            userdb.close()

    try:
        from jobs.state import StateStore

        StateStore(settings.state.url).close()
        echo(f"ok    state database {safe_url(settings.state.url)}")
    except ReconcileError as exc:
        failed("state database", exc)

    if failures:
        return CheckResult(False, failures[0].exit_code)
    echo("all checks passed")
    return CheckResult(True, EXIT_OK)
