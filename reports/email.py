"""Email over SMTP: a run's report (summary in the body, CSVs attached) and any other message.

STARTTLS, SSL or plain (a local relay); the user comes from `[email] user`, the password
only from `SMTP_PASSWORD`. Every failure leaves as one DeliveryError line naming the
server and what it refused; nothing here logs an address or a message body.
"""

from __future__ import annotations

import io
import json
import re
import smtplib
import socket
import ssl
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pandas as pd

from reconcile.errors import ConfigError, DeliveryError
from reconcile.settings import EmailSettings
from reports.tables import write_csv

__all__ = [
    "PASSWORD_ENV",
    "PERSONAL_COLUMNS",
    "REDACTED",
    "Attachment",
    "SmtpSender",
    "build_report_message",
    "redact_addresses",
    "report_attachments",
    "smtp_password",
    "smtp_session",
    "strip_personal_data",
]

PASSWORD_ENV = "SMTP_PASSWORD"
PERSONAL_COLUMNS = ("email", "name")
# Findings that compare a personal field carry it in the value columns.
_VALUE_COLUMNS = ("stripe_value", "local_value")
REDACTED = "[redacted]"
# Anything shaped like local@domain: over-redacting a value is cheap, leaking an address not.
_EMAIL_ADDRESS = re.compile(r"[^\s@,;:<>()\[\]\"]+@[^\s@,;:<>()\[\]\"]+")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")

Attachment = tuple[str, bytes, str, str]  # file name, content, maintype, subtype


def smtp_password(settings: EmailSettings, env: Mapping[str, str]) -> str | None:
    """The SMTP password for `[email] user`; ConfigError when a user is set and it is not."""
    if settings.user is None:
        return None
    password = env.get(PASSWORD_ENV)
    if not password:
        raise ConfigError(
            f"[email] user is set but {PASSWORD_ENV} is not: export {PASSWORD_ENV} with the "
            "SMTP password, or remove [email] user for a server without login"
        )
    return password


def redact_addresses(text: str) -> str:
    """`text` with every email address in it replaced by `REDACTED`."""
    return _EMAIL_ADDRESS.sub(REDACTED, text)


def _without_personal_data(value: Any) -> Any:
    """A JSON value without `email`/`name` keys (at any depth) and with addresses redacted."""
    if isinstance(value, dict):
        return {
            key: _without_personal_data(item)
            for key, item in value.items()
            if key not in PERSONAL_COLUMNS
        }
    if isinstance(value, list):
        return [_without_personal_data(item) for item in value]
    if isinstance(value, str):
        return redact_addresses(value)
    return value


def _scrubbed_json(text: str) -> str:
    try:
        loaded = json.loads(text)
    except ValueError:
        return redact_addresses(text)
    return json.dumps(_without_personal_data(loaded), sort_keys=True, ensure_ascii=False)


def _scrubbed(values: pd.Series) -> pd.Series:
    """A column of text without addresses. JSON cells (plan.csv's params and before,
    audit.csv's before and after) hold emails and names as keys of their objects: those
    are parsed, the keys dropped, and written back."""
    json_like = values.str.startswith(("{", "["))
    out = values.str.replace(_EMAIL_ADDRESS, REDACTED, regex=True)
    out[json_like] = values[json_like].map(_scrubbed_json)
    return out


def _number_columns(table: pd.DataFrame) -> list[str]:
    """Columns whose every cell is a number: a CSV read back as text says no more than that."""
    return [
        str(column)
        for column in table.columns
        if (table[column].eq("") | table[column].str.fullmatch(_NUMBER)).all()
    ]


def strip_personal_data(csv_bytes: bytes) -> bytes:
    """The CSV without personal data: no email and name columns, no email/name values in
    findings, no `email`/`name` keys in JSON cells, and no address left in any cell."""
    table = pd.read_csv(io.BytesIO(csv_bytes), dtype=str, keep_default_na=False)
    if "field" in table.columns:
        personal = table["field"].isin(PERSONAL_COLUMNS)
        for column in _VALUE_COLUMNS:
            if column in table.columns:
                table.loc[personal, column] = ""
    table = table.drop(columns=[c for c in PERSONAL_COLUMNS if c in table.columns])
    for column in table.columns:
        table[column] = _scrubbed(table[column])
    out = io.StringIO()
    write_csv(table, out, number_columns=_number_columns(table))
    return out.getvalue().encode("utf-8")


def report_attachments(
    run_dir: Path, *, include_personal_data: bool, zip_above_bytes: int, zip_name: str
) -> list[Attachment]:
    """The run's CSVs, personal columns removed if asked, zipped together above the size."""
    files: list[tuple[str, bytes]] = []
    for path in sorted(run_dir.glob("*.csv")):
        data = path.read_bytes()
        files.append((path.name, data if include_personal_data else strip_personal_data(data)))
    if sum(len(data) for _, data in files) <= zip_above_bytes:
        return [(name, data, "text", "csv") for name, data in files]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return [(zip_name, buffer.getvalue(), "application", "zip")]


def build_report_message(
    settings: EmailSettings,
    recipients: Sequence[str],
    summary: Mapping[str, Any],
    *,
    text: str,
    html: str | None,
    attachments: Sequence[Attachment],
) -> EmailMessage:
    counts: Mapping[str, int] = summary.get("counts_by_kind", {})
    message = EmailMessage()
    message["Subject"] = (
        f"[stripe-reconcile] {summary.get('job')} {summary.get('status', 'done')}: "
        f"{sum(counts.values())} finding(s), {summary.get('mode')} mode, "
        f"run {summary.get('run_id')}"
    )
    message["From"] = settings.sender
    message["To"] = ", ".join(recipients)
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for name, data, maintype, subtype in attachments:
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return message


class SmtpSender:
    """One SMTP session; `send` raises DeliveryError naming the server and the refusal."""

    def __init__(self, settings: EmailSettings, password: str | None) -> None:
        self._settings = settings
        self._password = password
        self._smtp: smtplib.SMTP | None = None

    @property
    def where(self) -> str:
        return f"SMTP {self._settings.smtp_host}:{self._settings.smtp_port}"

    def __enter__(self) -> SmtpSender:
        s = self._settings
        try:
            if s.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.smtp_host,
                    s.smtp_port,
                    timeout=s.timeout_seconds,
                    context=ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout_seconds)
            self._smtp = smtp
            smtp.ehlo()
            if s.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if s.user is not None:
                smtp.login(s.user, self._password or "")
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            self._close()
            raise DeliveryError(
                f"{self.where}: could not connect and log in ({_why(exc)})"
            ) from exc
        return self

    def send(self, message: EmailMessage, recipients: Sequence[str] | None = None) -> None:
        """Send `message` to `recipients`, or to the addresses its headers name."""
        if self._smtp is None:
            raise RuntimeError("SmtpSender.send outside its with block")
        try:
            refused = self._smtp.send_message(
                message, to_addrs=None if recipients is None else list(recipients)
            )
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{self.where}: the message was refused ({_why(exc)})") from exc
        if refused:
            raise DeliveryError(
                f"{self.where}: {len(refused)} recipient(s) refused "
                f"({_why_codes(refused)}); check [email] to"
            )

    def __exit__(self, *exc_info: object) -> None:
        self._close()

    def _close(self) -> None:
        if self._smtp is None:
            return
        try:
            self._smtp.quit()
        except (smtplib.SMTPException, OSError):
            self._smtp.close()
        self._smtp = None


@contextmanager
def smtp_session(settings: EmailSettings, password: str | None) -> Iterator[SmtpSender]:
    with SmtpSender(settings, password) as sender:
        yield sender


def _why(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = (
            exc.smtp_error.decode("utf-8", "replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        return f"{exc.smtp_code} {' '.join(text.split())}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return f"recipients refused: {_why_codes(exc.recipients)}"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out: check [email] smtp_host, smtp_port and the firewall"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: check [email] smtp_host and smtp_port"
    return f"{type(exc).__name__}: {exc}"


def _why_codes(refused: Mapping[str, tuple[int, bytes]]) -> str:
    # The codes say why; the addresses are personal data and stay out of the line.
    codes = sorted(
        {
            f"{code} {' '.join(msg.decode('utf-8', 'replace').split())}"
            for code, msg in refused.values()
        }
    )
    return "; ".join(codes)
