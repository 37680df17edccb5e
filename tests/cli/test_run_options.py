"""The options every `run JOB` command shares, through the real CLI against the sandbox:
`--email/--no-email` on the write jobs, the live-confirmation variable, `timeout_seconds`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import click.testing
import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from jobs.commands.cli import cli
from sandbox.runner import SandboxServer
from tests.cards.conftest import SmtpHandler, SmtpServer, free_port
from tests.maintenance.world import TEST_KEY, MaintenanceWorld, build

WRITE_JOBS = ["sync-metadata", "link-users", "dedupe", "gdpr-delete", "default-payment-method"]


@pytest.fixture
def mworld(sandbox_server: SandboxServer, tmp_path: Path) -> MaintenanceWorld:
    return build(sandbox_server, tmp_path, f"sqlite:///{tmp_path / 'users.db'}")


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    handler = SmtpHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        controller.stop()


def _config(world: MaintenanceWorld, tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[userdb]\nurl = "{world.settings.userdb.url}"\n'
        f'[state]\nurl = "{world.settings.state.url}"\n'
        f'[reports]\nout = "{tmp_path / "out"}"\n{extra}'
    )
    return path


def _invoke(
    world: MaintenanceWorld, config: Path, args: list[str], **env: str
) -> click.testing.Result:
    return CliRunner().invoke(
        cli,
        ["--config", str(config), *args],
        env={
            "STRIPE_SECRET_KEY": TEST_KEY,
            "STRIPE_API_BASE": world.sandbox.url,
            "STRIPE_RECONCILE_CONFIRM_LIVE": None,  # type: ignore[dict-item]
            "SMTP_PASSWORD": None,  # type: ignore[dict-item]
            **env,
        },
        catch_exceptions=False,
    )


def _error_lines(result: click.testing.Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("stripe-reconcile:")]


@pytest.mark.parametrize("job", WRITE_JOBS)
def test_every_write_job_emails_its_report_with_email_and_not_with_no_email(
    mworld: MaintenanceWorld, smtp: SmtpServer, tmp_path: Path, job: str
) -> None:
    config = _config(
        mworld,
        tmp_path,
        f'[email]\nto = ["ops@example.com"]\nsmtp_host = "{smtp.host}"\n'
        f'smtp_port = {smtp.port}\nsecurity = "none"\n',
    )
    silent = _invoke(mworld, config, ["run", job, "--no-email"])
    assert silent.exit_code == 0, silent.stderr
    assert smtp.received == []

    sent = _invoke(mworld, config, ["run", job, "--email"])
    assert sent.exit_code == 0, sent.stderr
    (mail,) = smtp.received
    assert mail.rcpt_tos == ["ops@example.com"]
    assert job in str(mail.message["Subject"])
    assert mworld.writes() == []  # a dry run: the report is emailed, nothing written


def test_a_write_jobs_email_without_recipients_is_refused_before_the_run(
    mworld: MaintenanceWorld, tmp_path: Path
) -> None:
    mworld.sandbox.request_log.clear()
    result = _invoke(mworld, _config(mworld, tmp_path), ["run", "dedupe", "--email"])
    assert result.exit_code == 2
    (line,) = _error_lines(result)
    assert "--email needs recipients" in line
    assert mworld.sandbox.request_log.entries() == []


@pytest.mark.parametrize("job", ["sync-metadata", "gdpr-delete", "card-expiry"])
def test_a_malformed_confirmation_variable_stops_a_writing_command_before_any_request(
    mworld: MaintenanceWorld, tmp_path: Path, job: str
) -> None:
    mworld.sandbox.request_log.clear()
    result = _invoke(
        mworld,
        _config(mworld, tmp_path),
        ["run", job, *(["--send"] if job == "card-expiry" else ["--apply"])],
        STRIPE_RECONCILE_CONFIRM_LIVE="maybe",
    )
    assert result.exit_code == 2, result.output
    (line,) = _error_lines(result)
    assert "STRIPE_RECONCILE_CONFIRM_LIVE='maybe' is neither yes nor no" in line
    assert mworld.sandbox.request_log.entries() == []
    assert mworld.writes() == []


@pytest.mark.parametrize("flags", [[], ["--confirm-live"]])
def test_a_malformed_confirmation_variable_stops_a_customer_write(
    mworld: MaintenanceWorld, tmp_path: Path, flags: list[str]
) -> None:
    mworld.sandbox.request_log.clear()
    result = _invoke(
        mworld,
        _config(mworld, tmp_path),
        ["customer", "update-metadata", "cus_sync1", "plan=pro", *flags],
        STRIPE_RECONCILE_CONFIRM_LIVE="maybe",
    )
    assert result.exit_code == 2, result.output
    (line,) = _error_lines(result)
    assert "STRIPE_RECONCILE_CONFIRM_LIVE='maybe' is neither yes nor no" in line
    assert mworld.sandbox.request_log.entries() == []


def test_fail_on_is_one_of_the_write_options(mworld: MaintenanceWorld, tmp_path: Path) -> None:
    config = _config(mworld, tmp_path)
    # The world's duplicate group is dedupe's finding: a dry run exits 0, --fail-on 1.
    assert _invoke(mworld, config, ["run", "dedupe"]).exit_code == 0
    failing = _invoke(mworld, config, ["run", "dedupe", "--fail-on", "info"])
    assert failing.exit_code == 1, failing.stderr
    unknown = _invoke(mworld, config, ["run", "dedupe", "--fail-on", "fatal"])
    assert unknown.exit_code == 2
    assert "Invalid value for '--fail-on'" in unknown.stderr


def test_a_hung_stripe_times_out_after_timeout_seconds_and_the_run_exits_3(
    mworld: MaintenanceWorld, tmp_path: Path
) -> None:
    config = _config(
        mworld,
        tmp_path,
        "[stripe]\ntimeout_seconds = 0.3\nmax_retries = 2\nretry_initial_delay = 0.01\n",
    )
    mworld.sandbox.latency_ms = 5_000
    try:
        started = time.monotonic()
        result = _invoke(mworld, config, ["run", "reconcile"])
        elapsed = time.monotonic() - started
    finally:
        mworld.sandbox.latency_ms = 0
    assert result.exit_code == 3, result.output
    (line,) = _error_lines(result)
    assert "Could not reach the Stripe API" in line
    # Three tries of 0.3 s and two short backoffs, not 3 x 80 s (nor one 5 s answer).
    assert elapsed < 4.5, elapsed
