"""Delivery after a run: the emailed report as an AfterRun hook, and the `--email` option.

`--email` sends to `[email] to`; `--no-email` sends nothing; without either, a run sends
when `[email] to` is set. The settings are checked before the run starts, so a missing
recipient or password never costs a whole run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from jobs.runner import AfterRun, RunOutcome
from jobs.summary import format_summary
from reconcile.errors import ConfigError
from reconcile.logs import get_logger
from reconcile.settings import Settings

__all__ = ["after_run_hooks", "email_option", "email_report_hook"]

F = TypeVar("F", bound=Callable[..., Any])
log = get_logger(__name__)


def email_option(func: F) -> F:
    return click.option(
        "--email/--no-email",
        "email",
        default=None,
        help="Email the report to [email] to (default: when [email] to is set).",
    )(func)


def email_report_hook(settings: Settings, env: Mapping[str, str] | None = None) -> AfterRun:
    """The hook that emails a run's report; ConfigError now if it could never work."""
    # SMTP and the message builder load only for runs that email their report.
    from reports.email import build_report_message, report_attachments, smtp_password, smtp_session

    if not settings.email.to:
        raise ConfigError(
            '--email needs recipients: set [email] to = ["you@example.com"] in the configuration'
        )
    password = smtp_password(settings.email, os.environ if env is None else env)

    def send_report(outcome: RunOutcome, settings: Settings) -> None:
        email = settings.email
        html_path = Path(outcome.run_dir) / "summary.html"
        message = build_report_message(
            email,
            email.to,
            outcome.summary,
            text=format_summary(outcome.summary) + f"\n\nReports: {outcome.run_dir}\n",
            html=html_path.read_text(encoding="utf-8") if html_path.exists() else None,
            attachments=report_attachments(
                Path(outcome.run_dir),
                include_personal_data=email.include_personal_data,
                zip_above_bytes=email.zip_above_bytes,
                zip_name=f"{outcome.summary.get('job', 'run')}-{outcome.run_id}.zip",
            ),
        )
        with smtp_session(email, password) as sender:
            sender.send(message)
        log.info("report emailed", recipients=len(email.to))

    return send_report


def after_run_hooks(
    settings: Settings, email: bool | None, env: Mapping[str, str] | None = None
) -> list[AfterRun]:
    """The delivery steps a `run` command asked for (explicitly or through the settings)."""
    wanted = bool(settings.email.to) if email is None else email
    return [email_report_hook(settings, env)] if wanted else []
