"""Settings for unattended use: `[schedule]`, `[resume]` and `[metrics]`.

They live here, not in reconcile/settings.py, so that the shared settings module only
gains one import and three fields. Job names are checked against the registry where
the registry is known (the scheduler), not here, so the engine never imports jobs/.
"""

from __future__ import annotations

import re
import zoneinfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MetricsSettings", "ResumeSettings", "ScheduleEntry", "ScheduleSettings"]

_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_:.-]*$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleEntry(_Section):
    """One job's schedule: a crontab(5) expression and the options of its runs."""

    cron: str
    fail_on: str | None = None
    out: str | None = None
    # Passed to the job as its options (e.g. apply = true, max_changes = 50 for
    # maintenance jobs that declare them).
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        # Imported here: the parser is a pure module, but keep settings import-light.
        from reconcile.crontab import parse_crontab

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
    misfire_grace_seconds: int = Field(default=3600, ge=1)
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
    max_age_hours: float = Field(default=12.0, gt=0)
    # Created-date windows the customer listing starts with (1 day, 2, 4, ... back); dense
    # windows are cut further while it runs, so 1 is enough and costs the fewest requests.
    windows: int = Field(default=1, ge=1, le=64)


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
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL, e.g. http://pushgateway:9091")
        return value.rstrip("/")

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
