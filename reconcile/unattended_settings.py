"""Settings for unattended use: `[schedule]`, `[resume]` and `[metrics]`.

They live here, not in reconcile/settings.py, so that the shared settings module only
gains one import and three fields. Job names are checked against the registry where
the registry is known (the scheduler), not here, so the engine never imports jobs/.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "IncrementalSettings",
    "MetricsSettings",
    "ResumeSettings",
    "ScheduleEntry",
    "ScheduleSettings",
    "check_http_url",
]

_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_:.-]*$")
# A DNS name or an IP address (urlsplit gives an IPv6 literal without its brackets).
_HOST = re.compile(r"^([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.%A-Za-z]*)$")


class _Section(BaseModel):
    # Strict as in reconcile.settings: TOML strings are never read as booleans or numbers.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def check_http_url(value: str, example: str) -> str:
    """`value` without a trailing slash, or ValueError if it is no usable http(s) URL."""
    wrong = f"must be an http:// or https:// URL with a host, e.g. {example}"
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is no port
    except ValueError:
        raise ValueError(f"{wrong}, got {value!r}") from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not _HOST.match(host):
        raise ValueError(f"{wrong}, got {value!r}")
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL end up in logs and error lines.
        raise ValueError(f"{wrong} and no user or password in it")
    if parts.query or parts.fragment or any(c.isspace() for c in value.strip()):
        raise ValueError(f"{wrong} and nothing after the path, got {value!r}")
    return value.strip().rstrip("/")


class ScheduleEntry(_Section):
    """One job's schedule: a crontab(5) expression and the options of its runs."""

    cron: str
    fail_on: str | None = None
    out: str | None = None
    # The job's options (e.g. apply = true, max_changes = 50 for a job that writes), as
    # written: reconcile.job_options checks them against the job's model at load.
    options: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        # Imported here: the parser is a pure module, but keep settings import-light.
        from reconcile.rules.crontab import parse_crontab

        parse_crontab(value)  # raises ValueError naming the field at fault
        return value.strip()

    @field_validator("fail_on")
    @classmethod
    def _fail_on(cls, value: str | None) -> str | None:
        if value is not None and value not in ("info", "warning", "error"):
            raise ValueError('must be "info", "warning" or "error"')
        return value


class ScheduleSettings(_Section):
    timezone: str = "UTC"
    # A run that could not start on time (the scheduler was down or busy) still starts
    # if it is at most this late; later ones are skipped, and missed runs coalesce to one.
    misfire_grace_seconds: int = Field(default=3600, ge=1, le=31 * 86400)
    jobs: dict[str, ScheduleEntry] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as UTC or Europe/Berlin"
            ) from None
        return value


class ResumeSettings(_Section):
    # Resume the last failed or interrupted run of a job by itself (without --resume)
    # when it is younger than max_age_hours; older listings are stale, so start afresh.
    auto: bool = False
    max_age_hours: float = Field(default=12.0, gt=0, le=24 * 366)
    # Created-date windows an account's first listing starts with (1 day, 2, 4, ... back);
    # dense windows are cut further while it runs, so 1 is enough and costs the fewest
    # requests. Later listings are cut by the last one's shape (reconcile.rules.listing_plan).
    windows: int = Field(default=1, ge=1, le=64)
    # A run's lease on its job, renewed every third of it while the run lives: a run
    # killed on any host (SIGKILL, a lost node or pod) frees its job this long after.
    lease_seconds: float = Field(default=45.0, ge=1, le=3600)


class MetricsSettings(_Section):
    # Folder of node_exporter's textfile collector; one `stripe_reconcile_<job>.prom` each.
    textfile_dir: str | None = None
    # Prometheus Pushgateway, e.g. http://pushgateway:9091; a failed push exits 7.
    pushgateway_url: str | None = None
    job_label: str = "stripe-reconcile"

    @field_validator("pushgateway_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        return check_http_url(value, "http://pushgateway:9091")

    @field_validator("textfile_dir")
    @classmethod
    def _dir(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("job_label")
    @classmethod
    def _label(cls, value: str) -> str:
        if not _LABEL.match(value):
            raise ValueError("must be a plain label value (letters, digits, _ : . -)")
        return value


class IncrementalSettings(_Section):
    """`[incremental]`: reconcile and card-expiry from events (reconcile.listing.mirror)."""

    # Runs without --incremental or --full (scheduled ones included) read the events since
    # the last run instead of listing every customer.
    enabled: bool = False
    # The safety net: a full listing at least this often catches what events missed (Stripe
    # may never generate one). At most 29: Stripe keeps events 30 days.
    full_every_days: float = Field(default=7.0, gt=0, le=29)
    # Events are read from this long before the watermark: late events land there.
    overlap_seconds: int = Field(default=300, ge=0, le=86_400)
    # Folder of the customer mirrors; unset: beside a SQLite state database, else
    # `[reports] out`/.state.
    dir: str | None = None

    @field_validator("dir")
    @classmethod
    def _dir(cls, value: str | None) -> str | None:
        return value or None
