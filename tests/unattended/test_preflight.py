"""`check` as a real preflight: every line against a real service, each one failing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from jobs.commands.check import run_checks
from reconcile.errors import EXIT_CONFIG, EXIT_DELIVERY_FAILED, EXIT_STRIPE
from reconcile.settings import Settings
from reconcile.state.store import StateStore
from reconcile.unattended_settings import MetricsSettings
from tests.cards.conftest import SmtpHandler, free_port
from tests.seeded import SeededWorld

SMTP_USER = "robot"
SMTP_PASSWORD = "s3cret-password"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _authenticate(
    _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any
) -> AuthResult:
    ok = (
        isinstance(data, LoginPassword)
        and data.login == SMTP_USER.encode()
        and data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


@dataclass
class Smtp:
    port: int
    handler: SmtpHandler


@pytest.fixture
def smtp_with_login() -> Iterator[Smtp]:
    handler = SmtpHandler()
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield Smtp(port, handler)
    finally:
        controller.stop()


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/-/healthy" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def pushgateway() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _everything(world: SeededWorld, tmp_path: Path, smtp_port: int, pushgateway: str) -> Settings:
    settings = world.settings
    return settings.model_copy(
        update={
            "stripe": settings.stripe.model_copy(
                update={"limiter_url": REDIS_URL, "limit_share": 0.5}
            ),
            "reports": settings.reports.model_copy(update={"out": tmp_path / "reports"}),
            "email": settings.email.model_copy(
                update={
                    "smtp_host": "127.0.0.1",
                    "smtp_port": smtp_port,
                    "security": "none",
                    "user": SMTP_USER,
                    "to": ["ops@example.com"],
                }
            ),
            "metrics": MetricsSettings(pushgateway_url=pushgateway),
        }
    )


def _check(settings: Settings, password: str = SMTP_PASSWORD) -> tuple[int, list[str]]:
    lines: list[str] = []
    result = run_checks(settings, lines.append, env={"SMTP_PASSWORD": password})
    return result.exit_code, lines


def _line(lines: list[str], start: str) -> str:
    (found,) = [line for line in lines if line.startswith(start)]
    return found


def test_every_service_answers_and_no_mail_is_sent(
    world: SeededWorld, tmp_path: Path, smtp_with_login: Smtp, pushgateway: str
) -> None:
    code, lines = _check(_everything(world, tmp_path, smtp_with_login.port, pushgateway))
    assert code == 0, lines
    assert lines[-1] == "all checks passed"
    _line(lines, "ok    state database ")
    assert _line(lines, "ok    report folder ").endswith("(writable)")
    assert (tmp_path / "reports").is_dir()
    assert list((tmp_path / "reports").iterdir()) == []  # the probe file is gone
    assert _line(lines, "ok    SMTP 127.0.0.1:").endswith("answers (EHLO, login; no mail sent)")
    assert smtp_with_login.handler.received == []
    _line(lines, f"ok    Pushgateway at {pushgateway} answers")
    _line(lines, "ok    Redis at redis://127.0.0.1:6379/0 answers")
    # Test mode: 25/s, half of it this tool's.
    assert _line(lines, "ok    rate limit ").startswith(
        "ok    rate limit 12.5 requests/s in force: limit_share 0.5 of 25/s"
    )


def test_the_report_folder_failing_keeps_its_cause(
    world: SeededWorld, tmp_path: Path, smtp_with_login: Smtp, pushgateway: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = _everything(world, tmp_path, smtp_with_login.port, pushgateway)
    settings = settings.model_copy(
        update={"reports": settings.reports.model_copy(update={"out": blocker / "reports"})}
    )
    code, lines = _check(settings)
    assert code == EXIT_CONFIG
    line = _line(lines, "FAIL  report folder")
    assert "Not a directory" in line
    assert "[reports] out" in line
    assert [x for x in lines if x.startswith("FAIL")] == [line]


@pytest.mark.parametrize(
    ("password", "port_of", "cause"),
    [
        ("wrong", lambda smtp: smtp.port, "535"),
        (SMTP_PASSWORD, lambda _smtp: free_port(), "connection refused"),
    ],
    ids=["login-refused", "connection-refused"],
)
def test_smtp_failing_keeps_its_cause(
    world: SeededWorld,
    tmp_path: Path,
    smtp_with_login: Smtp,
    pushgateway: str,
    password: str,
    port_of: Any,
    cause: str,
) -> None:
    settings = _everything(world, tmp_path, port_of(smtp_with_login), pushgateway)
    code, lines = _check(settings, password)
    assert code == EXIT_DELIVERY_FAILED
    (fail,) = [x for x in lines if x.startswith("FAIL")]
    assert fail.startswith("FAIL  email: SMTP 127.0.0.1:")
    assert cause in fail
    assert "\n" not in fail
    assert smtp_with_login.handler.received == []


def test_pushgateway_and_redis_failing_keep_their_cause(
    world: SeededWorld, tmp_path: Path, smtp_with_login: Smtp
) -> None:
    settings = _everything(world, tmp_path, smtp_with_login.port, f"http://127.0.0.1:{free_port()}")
    settings = settings.model_copy(
        update={
            "stripe": settings.stripe.model_copy(
                update={"limiter_url": f"redis://127.0.0.1:{free_port()}/0"}
            )
        }
    )
    code, lines = _check(settings)
    fails = [x for x in lines if x.startswith("FAIL")]
    assert len(fails) == 2, lines
    redis, push = fails
    assert redis.startswith("FAIL  Redis: [stripe] limiter_url redis://127.0.0.1:")
    assert "refused" in redis.lower()
    assert push.startswith("FAIL  Pushgateway: http://127.0.0.1:")
    assert "connection refused" in push
    # Stripe itself still answers (probed with a limiter of the process's own).
    _line(lines, "ok    Stripe answers at ")
    # The exit code is the first problem's: Redis unreachable is exit 3, like Stripe.
    assert code == EXIT_STRIPE


def test_a_state_database_that_cannot_be_written_fails_its_line(
    world: SeededWorld, tmp_path: Path, smtp_with_login: Smtp, pushgateway: str, postgres_url: str
) -> None:
    StateStore(postgres_url).close()  # the tables exist; this user may only read now
    read_only = postgres_url + "%20-cdefault_transaction_read_only%3Don"
    engine = sa.create_engine(read_only)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SHOW default_transaction_read_only")).scalar() == "on"
    engine.dispose()
    settings = _everything(world, tmp_path, smtp_with_login.port, pushgateway)
    settings = settings.model_copy(
        update={"state": settings.state.model_copy(update={"url": read_only})}
    )
    code, lines = _check(settings)
    assert code == EXIT_CONFIG
    (fail,) = [x for x in lines if x.startswith("FAIL")]
    assert fail.startswith("FAIL  state database: [state] url ")
    assert "read-only transaction" in fail
