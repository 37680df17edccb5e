"""`stripe-reconcile check`: every precondition of a run, one line each.

Each line tries the thing for real, without side effects a run would regret: Stripe
answers a one-customer listing, the state database takes a write in a transaction that
is rolled back, the report folder takes a file (removed), the SMTP server answers EHLO
and accepts the login (no mail is sent), the Pushgateway answers its health check and
Redis a PING. A failing line keeps its cause; the exit code is the first problem's.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from reconcile.errors import EXIT_OK, ConfigError, DeliveryError, ReconcileError
from reconcile.settings import Settings
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter import MODE_LIMITS
from reconcile.userdb import UserDB, safe_url
from reports.metrics import PUSH_TIMEOUT_SECONDS

__all__ = ["CheckLine", "CheckResult", "check_command", "run_checks"]


_LABELS = {"ok": "ok", "warn": "note", "fail": "FAIL"}


@dataclass(frozen=True)
class CheckLine:
    """One check: its name, `ok`, `warn` (works, with a caveat) or `fail`, and its text."""

    name: str
    status: str
    message: str

    def text(self) -> str:
        return f"{_LABELS[self.status]:<6}{self.message}"


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    exit_code: int
    lines: tuple[CheckLine, ...] = ()


def run_checks(
    settings: Settings,
    echo: Callable[[str], None],
    gateway_factory: Callable[[Settings], StripeGateway] | None = None,
    env: Mapping[str, str] | None = None,
) -> CheckResult:
    failures: list[ReconcileError] = []
    lines: list[CheckLine] = []

    def say(status: str, name: str, message: str) -> None:
        line = CheckLine(name, status, message)
        lines.append(line)
        echo(line.text())

    def ok(name: str, message: str) -> None:
        say("ok", name, message)

    def failed(what: str, exc: ReconcileError, name: str | None = None) -> None:
        failures.append(exc)
        say("fail", name or what, f"{what}: {exc.message}")

    from jobs.apply import CONFIRM_LIVE_ENV, confirm_live_from_env

    try:
        if confirm_live_from_env(os.environ if env is None else env):
            ok("confirm_live", f"{CONFIRM_LIVE_ENV} confirms live-mode writes and sends")
    except ReconcileError as exc:
        failed(CONFIRM_LIVE_ENV, exc, "confirm_live")

    try:
        key = settings.require_key()
        mode = settings.mode
    except ReconcileError as exc:
        failed("key", exc)
    else:
        from reconcile.mode import mask_key

        ok("key", f"key {mask_key(key)} ({mode.value} mode)")
        limit = settings.max_requests_per_second()
        share = settings.stripe.limit_share
        ok(
            "rate_limit",
            f"rate limit {limit * share:g} requests/s in force: limit_share {share:g} of "
            f"{limit:g}/s (Stripe's {mode.value}-mode limit is {MODE_LIMITS[mode]:g}/s)",
        )
        probe_settings = settings
        if settings.stripe.limiter_url is not None:
            from reconcile.stripe_api.limiter_redis import connect, redacted_url

            shown = redacted_url(settings.stripe.limiter_url)
            try:
                connect(settings.stripe.limiter_url).close()
                ok("redis", f"Redis at {shown} answers (shared rate limiter)")
            except ReconcileError as exc:
                failed("Redis", exc, "redis")
                # Stripe is still probed, with a limiter of this process's own, so its
                # line says what is wrong with Stripe rather than repeat Redis's.
                probe_settings = settings.model_copy(
                    update={"stripe": settings.stripe.model_copy(update={"limiter_url": None})}
                )
        api = settings.stripe.api_base or "https://api.stripe.com"
        try:
            from jobs.runner import build_gateway

            gateway = (gateway_factory or build_gateway)(probe_settings)
            first = next(iter(gateway.customers_list(page_size=1)), None)
            if first is not None:
                gateway.confirm_mode(first)
            seen = "yes" if first is not None else "none yet"
            ok("stripe", f"Stripe answers at {api} (customers visible: {seen})")
        except ReconcileError as exc:
            failed(f"Stripe at {api}", exc, "stripe")

    try:
        userdb: UserDB | None = UserDB(settings.userdb)
    except ReconcileError as exc:
        failed("user database", exc, "user_database")
        userdb = None
    if userdb is not None:
        try:
            info = userdb.inspect()
            ok("user_database", f"user database {safe_url(settings.userdb.url)}")
            ok(
                "table",
                f"table {info.table}: {info.row_count} rows; columns used: "
                + ", ".join(userdb.used_columns()),
            )
            for off in userdb.features_off:  # optional columns the table does not have
                say("warn", "table", off.describe(info.table))
        except ReconcileError as exc:
            failed("user database", exc, "user_database")
        finally:
            userdb.close()

    try:
        _check_state_writable(settings.state.url)
        ok("state_database", f"state database {safe_url(settings.state.url)} (writable)")
    except ReconcileError as exc:
        failed("state database", exc, "state_database")

    try:
        _check_report_folder(settings.reports.out, settings.reports.file_mode)
        ok("report_folder", f"report folder {settings.reports.out} (writable)")
    except ReconcileError as exc:
        failed("report folder", exc, "report_folder")

    if _email_configured(settings):
        where = f"SMTP {settings.email.smtp_host}:{settings.email.smtp_port}"
        try:
            login = _check_smtp(settings, os.environ if env is None else env)
            ok("smtp", f"{where} answers (EHLO{login}; no mail sent)")
        except ReconcileError as exc:
            failed("email", exc, "smtp")

    if settings.metrics.pushgateway_url is not None:
        try:
            _check_pushgateway(settings.metrics.pushgateway_url)
            ok("pushgateway", f"Pushgateway at {settings.metrics.pushgateway_url} answers")
        except ReconcileError as exc:
            failed("Pushgateway", exc, "pushgateway")

    if failures:
        return CheckResult(False, failures[0].exit_code, tuple(lines))
    echo("all checks passed")
    return CheckResult(True, EXIT_OK, tuple(lines))


def check_command(ctx: click.Context, config_path: Path | None, *, as_json: bool) -> None:
    """`stripe-reconcile check [--json]`: the lines, or one JSON object; exits with the
    first problem's code."""
    from jobs.commands.support import load

    try:
        settings = load(ctx, config_path)
    except ReconcileError as exc:
        if as_json:
            line = CheckLine("configuration", "fail", f"configuration: {exc.message}")
            click.echo(_check_json(False, exc.exit_code, (line,)))
        raise
    result = run_checks(settings, _discard if as_json else click.echo)
    if as_json:
        click.echo(_check_json(result.passed, result.exit_code, result.lines))
    ctx.exit(EXIT_OK if result.passed else result.exit_code)


def _discard(_line: str) -> None:
    pass


def _check_json(passed: bool, exit_code: int, lines: tuple[CheckLine, ...]) -> str:
    from reconcile.logs import redact_text

    checks: list[dict[str, Any]] = [
        {**asdict(line), "message": redact_text(line.message)} for line in lines
    ]
    return json.dumps({"passed": passed, "exit_code": exit_code, "checks": checks})


def _cause(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_state_writable(url: str) -> None:
    """Open the state DB and write to it in a transaction that is rolled back."""
    import sqlalchemy as sa

    from reconcile.state.store import StateStore

    state = StateStore(url)
    try:
        state.check_writable()
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigError(
            f"[state] url {safe_url(url)} cannot be written ({_cause(exc)}): "
            "give this user write access to the state database"
        ) from None
    finally:
        state.close()


def _check_report_folder(folder: Path, file_mode: int) -> None:
    """The folder exists (made if missing, as a run would) and takes a file."""
    from reconcile.atomic import dir_mode_for

    try:
        folder.mkdir(mode=dir_mode_for(file_mode), parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".check-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"[reports] out {folder} is not writable ({exc.strerror or exc}): "
            "create it and give this user write access, or set [reports] out"
        ) from None


def _email_configured(settings: Settings) -> bool:
    # Reports go to [email] to; reminders need the server even without it.
    return bool(settings.email.to) or bool(settings.email.model_fields_set)


def _check_smtp(settings: Settings, env: Mapping[str, str]) -> str:
    """EHLO (STARTTLS as configured) and login when a user is set; nothing is sent."""
    from reports.email import smtp_password, smtp_session

    password = smtp_password(settings.email, env)
    with smtp_session(settings.email, password):
        pass
    return "" if settings.email.user is None else ", login"


def _check_pushgateway(url: str) -> None:
    import urllib.error
    import urllib.request

    health = url.rstrip("/") + "/-/healthy"
    try:
        with urllib.request.urlopen(health, timeout=PUSH_TIMEOUT_SECONDS) as answer:
            answer.read()
    except urllib.error.HTTPError as exc:
        raise DeliveryError(
            f"{health} answered {exc.code} {exc.reason}: check [metrics] pushgateway_url"
        ) from None
    except OSError as exc:  # URLError: refused, unknown host, timeout
        raise DeliveryError(
            f"{health} does not answer ({_network_cause(exc)}): "
            "check [metrics] pushgateway_url and that the Pushgateway is up"
        ) from None


def _network_cause(exc: OSError) -> str:
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)
