"""Settings: one TOML file plus a few environment variables, validated once at start.

The secret key never comes from the file (files get committed); it comes from
`STRIPE_SECRET_KEY` or from the file named by `STRIPE_SECRET_KEY_FILE` (a mounted
Kubernetes secret). The user DB URL, which holds a password, may come the same way from
`STRIPE_RECONCILE_USERDB_URL` or `STRIPE_RECONCILE_USERDB_URL_FILE`, over `[userdb] url`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from email.utils import getaddresses
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from reconcile.errors import ConfigError
from reconcile.job_options import explain_error, scheduled_options
from reconcile.mode import Mode, mode_of_key
from reconcile.rate_limits import DEFAULT_LIMIT_SHARE, global_limit_for
from reconcile.unattended_settings import (
    IncrementalSettings,
    MetricsSettings,
    ResumeSettings,
    ScheduleSettings,
    check_http_url,
)

__all__ = [
    "CONFIG_ENV",
    "CardExpirySettings",
    "EmailSettings",
    "MaintenanceSettings",
    "ReportsSettings",
    "Settings",
    "StateSettings",
    "StripeSettings",
    "UserDBSettings",
    "check_transport",
    "load_settings",
]

CONFIG_ENV = "STRIPE_RECONCILE_CONFIG"

ReportFormat = Literal["csv", "parquet"]
_ALL_FORMATS: tuple[ReportFormat, ...] = ("csv", "parquet")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


class _Section(BaseModel):
    # Strict: a TOML string is not a boolean or a number ("false" would read as true, "5"
    # hides a quoting mistake); inf and nan are no setting's value.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# TOML has no path type: paths are strings, converted here.
PathSetting = Annotated[Path, Field(strict=False)]


class StripeSettings(_Section):
    api_base: str | None = None
    max_requests_per_second: float = Field(default=0, ge=0)
    # Retries of 429, 5xx and dropped connections; the backoff doubles from the first
    # delay up to eight times it (1, 2, 4, 8 s by default).
    max_retries: int = Field(default=5, ge=0, le=20)
    retry_initial_delay: float = Field(default=1.0, gt=0, le=60)
    # How long one request may wait for Stripe's answer before it counts as a dropped
    # connection (retried like one); the SDK's own default is 80 s.
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # Redis holding the rate budget that every process and pod of the account shares;
    # unset: each process keeps its own (shared by the runs inside it).
    limiter_url: str | None = None
    # This tool's part of each of Stripe's limits; the rest is left to the account's
    # other clients (the production app).
    limit_share: float = DEFAULT_LIMIT_SHARE
    # Stripe's reads (GET requests) allowed to this tool over 30 days; 0: no budget kept.
    monthly_read_budget: int = Field(default=0, ge=0)

    @field_validator("api_base")
    @classmethod
    def _api_base_is_http(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        base = check_http_url(value, "http://127.0.0.1:12111")
        if urlsplit(base).path.rstrip("/").endswith("/v1"):
            # The SDK appends /v1/customers itself: a base ending in /v1 answers 404.
            raise ValueError(f"leave out the /v1 at its end (got {value!r}): the paths add it")
        return base

    @field_validator("limiter_url")
    @classmethod
    def _limiter_url_is_redis(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.match(r"^(rediss?|unix)://\S+$", value):
            raise ValueError("must be a Redis URL such as redis://redis:6379/0 (or rediss://)")
        return value

    @field_validator("limit_share")
    @classmethod
    def _limit_share_is_a_share(cls, value: float) -> float:
        if not 0 < value <= 1.0:
            raise ValueError(
                f"{value:g} is not a share of Stripe's limits: set it above 0 and at most 1.0 "
                "(0.8 leaves a fifth of each limit to the account's other clients)"
            )
        return value


class UserDBSettings(_Section):
    url: str = "sqlite:///users.db"
    table: str = "users"
    id_column: str = "id"
    email_column: str = "email"
    name_column: str | None = "name"
    customer_id_column: str = "stripe_customer_id"
    deleted_column: str | None = "deleted_at"
    user_id_metadata_key: str = "user_id"
    scope: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=lambda: {"plan": "plan"})
    chunk_size: int = Field(default=50_000, ge=100, le=10_000_000)

    @field_validator("table", "id_column", "email_column", "customer_id_column")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("must be a plain table or column name (letters, digits, _)")
        return value

    @field_validator("name_column", "deleted_column")
    @classmethod
    def _optional_identifier(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not _IDENTIFIER.match(value):
            raise ValueError("must be a plain column name (letters, digits, _) or left out")
        return value

    @field_validator("user_id_metadata_key")
    @classmethod
    def _metadata_key(cls, value: str) -> str:
        _check_metadata_key(value)
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_mapping(cls, value: dict[str, str]) -> dict[str, str]:
        for key, column in value.items():
            _check_metadata_key(key)
            if not _IDENTIFIER.match(column):
                raise ValueError(f"column {column!r} for key {key!r} is not a plain column name")
        return value

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            _check_metadata_key(key)
        return value

    @property
    def metadata_keys(self) -> tuple[str, ...]:
        return tuple(self.metadata)


class StateSettings(_Section):
    url: str = "sqlite:///stripe-reconcile-state.db"


class ReportsSettings(_Section):
    out: PathSetting = Path("output")
    formats: list[ReportFormat] = Field(default_factory=lambda: list(_ALL_FORMATS))
    file_mode: int = Field(default=0o600, ge=0, le=0o777)

    @field_validator("formats")
    @classmethod
    def _formats(cls, value: list[ReportFormat]) -> list[ReportFormat]:
        if not value:
            raise ValueError('must name at least one of "csv", "parquet"')
        return list(dict.fromkeys(value))


class EmailSettings(_Section):
    """SMTP delivery of run reports and reminders; the password only from SMTP_PASSWORD."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    to: list[str] = Field(default_factory=list)
    sender: str = Field(default="stripe-reconcile@localhost", alias="from")
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    user: str | None = None
    timeout_seconds: float = Field(default=30, gt=0, le=600)
    zip_above_bytes: int = Field(default=5_000_000, ge=0)
    include_personal_data: bool = True

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            _check_address(address)
        return value

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        # "Billing <billing@example.com>" is a sender too.
        found = getaddresses([value])
        _name, address = found[0] if len(found) == 1 else ("", "")
        if "\n" in value or "\r" in value or not address:
            raise ValueError(f"{value!r} is not one email address: set a single address")
        _check_address(address)
        return value


class CardExpirySettings(_Section):
    days: int = Field(default=30, ge=0, le=3650)
    reminder_template: PathSetting | None = None
    remind_again_after_days: int | None = Field(default=None, ge=1, le=3650)
    # A Jinja2 template; `card` is the soonest-expiring card of the email, `name` the customer's.
    subject: str = "Please update your card ending in {{ card.last4 }}"


class MaintenanceSettings(_Section):
    """The jobs that write (sync-metadata, link-users, dedupe, gdpr-delete, ...)."""

    # sync-metadata: also push the user's email and name; delete a metadata key ("")
    # when the mapped column is NULL (False: leave the key as it is).
    sync_email: bool = False
    sync_name: bool = False
    delete_when_null: bool = True


class Settings(_Section):
    stripe: StripeSettings = Field(default_factory=StripeSettings)
    userdb: UserDBSettings = Field(default_factory=UserDBSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    reports: ReportsSettings = Field(default_factory=ReportsSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    resume: ResumeSettings = Field(default_factory=ResumeSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    incremental: IncrementalSettings = Field(default_factory=IncrementalSettings)
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)
    card_expiry: CardExpirySettings = Field(default_factory=CardExpirySettings)
    secret_key: SecretStr | None = Field(default=None, exclude=True, strict=False)
    config_path: PathSetting | None = Field(default=None, exclude=True)

    @property
    def mode(self) -> Mode:
        return mode_of_key(self.require_key(), self.stripe.api_base)

    def require_key(self) -> str:
        if self.secret_key is None:
            raise ConfigError(
                "no Stripe key: set STRIPE_SECRET_KEY, or STRIPE_SECRET_KEY_FILE to a file "
                "holding the key (sk_test_/rk_test_ for test mode, sk_live_/rk_live_ for live)"
            )
        return self.secret_key.get_secret_value()

    def max_requests_per_second(self) -> float:
        """The global request budget: the mode's limit unless a lower one is set."""
        return global_limit_for(self.mode, self.stripe.max_requests_per_second)


def _check_address(address: str) -> None:
    if not re.match(r"^[^@\s,;<>]+@[^@\s,;<>]+$", address):
        raise ValueError(f"{address!r} is not one email address: set a single address")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport(settings: Settings, api_base_source: str = "[stripe] api_base") -> None:
    """Refuse a live key bound for a plain-http API base off this machine.

    Over http the key travels in clear text in every request's Authorization header. A
    loopback base (the sandbox, stripe-mock) never leaves the machine, so it is allowed.
    """
    base = settings.stripe.api_base
    if settings.secret_key is None or base is None or settings.mode is not Mode.LIVE:
        return
    parts = urlsplit(base)
    if parts.scheme != "http" or _is_loopback(parts.hostname or ""):
        return
    raise ConfigError(
        f"{api_base_source} {base} is plain http to another machine: a live-mode key would "
        "travel unencrypted; use an https:// URL (plain http only to 127.0.0.1 or localhost)"
    )


def _check_metadata_key(key: str) -> None:
    if not key or len(key) > 40 or "[" in key or "]" in key:
        raise ValueError(
            f"metadata key {key!r} breaks Stripe's rules (1 to 40 characters, no '[' or ']')"
        )


def _describe_error(error: Mapping[str, Any]) -> str:
    location = [str(part) for part in error.get("loc", ())]
    # A job's table is named as the user wrote it: [schedule.jobs.reconcile] cron.
    table = 3 if location[:2] == ["schedule", "jobs"] and len(location) > 3 else 1
    section = f"[{'.'.join(location[:table])}]" if location else "the file"
    setting = ".".join(location[table:])
    where = f"{section} {setting}".strip()
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return f"{where}: unknown setting; remove it or check its spelling in the README"
    return f"{where}: {explain_error(error)}"


def _read_toml(path: Path, given_by: str = "--config") -> dict[str, Any]:
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {os.path.normpath(path.expanduser().absolute())} "
            f"(from {given_by}) not found: "
            f"pass an existing file with --config PATH or {CONFIG_ENV}=PATH, or neither "
            "for the built-in defaults"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None


def _read_key(env: Mapping[str, str]) -> SecretStr | None:
    direct = env.get("STRIPE_SECRET_KEY")
    key_file = env.get("STRIPE_SECRET_KEY_FILE")
    if direct and key_file:
        raise ConfigError(
            "both STRIPE_SECRET_KEY and STRIPE_SECRET_KEY_FILE are set: keep only one"
        )
    if key_file:
        try:
            value = Path(key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"STRIPE_SECRET_KEY_FILE={key_file} cannot be read ({exc.strerror}): "
                "point it at the mounted secret file"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"STRIPE_SECRET_KEY_FILE={key_file} is not a text file: it must hold the key "
                "(sk_live_... or rk_live_..., sk_test_... or rk_test_...) and nothing else"
            ) from None
        if not value:
            raise ConfigError(f"STRIPE_SECRET_KEY_FILE={key_file} is empty: put the key in it")
        return SecretStr(value)
    if direct is not None:
        return SecretStr(direct.strip())
    return None


USERDB_URL_ENV = "STRIPE_RECONCILE_USERDB_URL"


def _read_userdb_url(env: Mapping[str, str]) -> str | None:
    """The user DB URL from the environment or a mounted Secret file, so its password never
    sits in a config file or ConfigMap; None when neither is set. Never logged."""
    direct = env.get(USERDB_URL_ENV)
    url_file = env.get(f"{USERDB_URL_ENV}_FILE")
    if direct and url_file:
        raise ConfigError(
            f"both {USERDB_URL_ENV} and {USERDB_URL_ENV}_FILE are set: keep only one"
        )
    if url_file:
        try:
            value = Path(url_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{USERDB_URL_ENV}_FILE={url_file} cannot be read ({exc.strerror}): "
                "point it at the mounted secret file"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"{USERDB_URL_ENV}_FILE={url_file} is not a text file: it must hold the user "
                "database URL (e.g. postgresql+psycopg://user:password@host/db) and nothing else"
            ) from None
        if not value:
            raise ConfigError(
                f"{USERDB_URL_ENV}_FILE={url_file} is empty: put the user database URL in it"
            )
        return value
    if direct:
        return direct.strip()
    return None


def _resolve_path(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or not value.strip():
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def _resolve_sqlite_url(value: Any, base: Path) -> Any:
    """A SQLite URL's relative file made absolute against `base`; other URLs as they are."""
    if not isinstance(value, str):
        return value
    match = re.match(r"^(sqlite(?:\+\w+)?:///)([^?]*)(\?.*)?$", value.strip())
    if match is None:
        return value
    prefix, database, query = match.group(1), match.group(2), match.group(3) or ""
    # In-memory and URI-style (file:...) databases have no folder to resolve against.
    if database in ("", ":memory:") or database.startswith("file:"):
        return value
    path = Path(database).expanduser()
    if path.is_absolute():
        return f"{prefix}{path}{query}"
    return f"{prefix}{base / path}{query}"


# (section, setting) of every path-like setting a config file may hold.
_FILE_PATHS = (
    ("reports", "out"),
    ("card_expiry", "reminder_template"),
    ("metrics", "textfile_dir"),
    ("incremental", "dir"),
)
_SQLITE_URLS = (("userdb", "url"), ("state", "url"))


def _resolve_relative_paths(raw: dict[str, Any], base: Path) -> None:
    """Paths written in a config file name places next to it, not in the folder the tool
    happens to start in (under cron that is $HOME)."""
    for names, resolve in ((_FILE_PATHS, _resolve_path), (_SQLITE_URLS, _resolve_sqlite_url)):
        for section_name, setting in names:
            section = raw.get(section_name)
            if isinstance(section, dict) and setting in section:
                section[setting] = resolve(section[setting], base)
    schedule = raw.get("schedule")
    jobs = schedule.get("jobs") if isinstance(schedule, dict) else None
    if isinstance(jobs, dict):
        for entry in jobs.values():
            if isinstance(entry, dict) and "out" in entry:
                entry["out"] = _resolve_path(entry["out"], base)


def load_settings(
    config_path: Path | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Read, merge and validate the settings; every problem is one ConfigError line.

    Relative paths in the file (SQLite URLs, folders, templates) resolve against the
    file's own folder; without a file the built-in defaults are relative to the current
    folder. Values from the environment are taken as given.
    """
    environ = os.environ if env is None else env
    given_by = "--config"
    path = config_path
    if path is None and environ.get(CONFIG_ENV):
        path, given_by = Path(environ[CONFIG_ENV]), CONFIG_ENV
    raw: dict[str, Any] = _read_toml(path, given_by) if path is not None else {}
    if path is not None:
        folder = Path(os.path.normpath(path.expanduser().absolute().parent))
        _resolve_relative_paths(raw, folder)
    for secret_name in ("secret_key", "api_key", "key"):
        if secret_name in raw.get("stripe", {}) or secret_name in raw:
            raise ConfigError(
                f"configuration file {path} holds a Stripe key ({secret_name}): remove it and "
                "set STRIPE_SECRET_KEY or STRIPE_SECRET_KEY_FILE instead"
            )
    api_base_source = "[stripe] api_base"
    if environ.get("STRIPE_API_BASE"):
        stripe_section = raw.setdefault("stripe", {})
        if not isinstance(stripe_section, dict):
            raise ConfigError(
                f"configuration file {path}: [stripe] must be a table ([stripe] on a line of "
                "its own, its settings below)"
            )
        stripe_section["api_base"] = environ["STRIPE_API_BASE"]
        api_base_source = "STRIPE_API_BASE"
    userdb_url = _read_userdb_url(environ)
    if userdb_url is not None:
        userdb_section = raw.setdefault("userdb", {})
        if not isinstance(userdb_section, dict):
            raise ConfigError(
                f"configuration file {path}: [userdb] must be a table ([userdb] on a line of "
                "its own, its settings below)"
            )
        userdb_section["url"] = userdb_url
    try:
        settings = Settings.model_validate(
            {**raw, "secret_key": _read_key(environ), "config_path": path}
        )
    except ValidationError as exc:
        source = f"configuration file {path}" if path else "settings"
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        if api_base_source == "STRIPE_API_BASE" and first.get("loc") == ("stripe", "api_base"):
            raise ConfigError(f"STRIPE_API_BASE: {explain_error(first)}") from None
        raise ConfigError(f"{source}: {_describe_error(first)}{more}") from None
    source = f"configuration file {path}: " if path else ""
    for name, entry in settings.schedule.jobs.items():
        # Checked now, so no command (serve above all) starts on a schedule it cannot run.
        scheduled_options(
            name, entry.options, entry.fail_on, where=f"{source}[schedule.jobs.{name}]"
        )
    if settings.secret_key is not None:
        settings.max_requests_per_second()  # a rate above the key's mode is refused now
        check_transport(settings, api_base_source)
    return settings
