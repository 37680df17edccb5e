"""The options of every job: one typed model per job, shared by the CLI and `[schedule]`.

A `run JOB` command and a `[schedule.jobs.JOB] options = { ... }` table are two spellings
of the same thing, so both go through the same model: booleans are booleans (the string
"false" is refused, never read as true), numbers are numbers, unknown keys are refused.
The job still receives a plain mapping (`JobOptions.as_mapping()`), keyed as before.

The models are pure data and live in the engine, not in jobs/, so the settings can check
a schedule's options when the configuration is loaded, before anything runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reconcile.errors import ConfigError

__all__ = [
    "CONFIRM_LIVE_VARIABLE",
    "DEFAULT_MAX_CHANGES",
    "OPTION_MODELS",
    "CardExpiryOptions",
    "JobOptions",
    "LinkUsersOptions",
    "ReconcileOptions",
    "WriteJobOptions",
    "confirm_live_from_env",
    "explain_error",
    "parse_job_options",
    "scheduled_options",
]

DEFAULT_MAX_CHANGES = 100
Severity = Literal["info", "warning", "error"]


# Field descriptions are the `run JOB` flags' help; `json_schema_extra={"flag": ...}` names a
# flag other than `--field-name` (an on/off pair for a field that may be None).
CONFIRM_LIVE_VARIABLE = "STRIPE_RECONCILE_CONFIRM_LIVE"
_INCREMENTAL_HELP = (
    "--incremental: read Stripe's events since the last run into the customer mirror "
    "instead of listing every customer (a full listing when the mirror cannot "
    "stand: missing, 29 days old, [incremental] full_every_days due, other mode, "
    "account or version); --full: list every customer "
    "[default: [incremental] enabled]."
)


class JobOptions(BaseModel):
    """What every job takes."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    resume: bool = Field(
        default=False,
        description=(
            "Continue the job's last failed or interrupted run: its snapshot, its stored pages; "
            "only the rest is fetched (a fresh run when there is none)."
        ),
    )
    fail_on: Severity | None = Field(
        default=None, description="Exit 1 when a finding of this severity or worse is reported."
    )
    # True always, False never, None when [email] to is set.
    email: bool | None = Field(
        default=None,
        description="Email the report to [email] to (default: when [email] to is set).",
    )

    def as_mapping(self) -> dict[str, Any]:
        """The options as the job reads them (`ctx.options.get("apply")`)."""
        return self.model_dump()


class ReconcileOptions(JobOptions):
    """`run reconcile`: read-only."""

    # True: from Stripe's events since the last run (--incremental); False: a full listing
    # (--full); None: `[incremental] enabled` decides.
    incremental: bool | None = Field(
        default=None,
        description=_INCREMENTAL_HELP,
        json_schema_extra={"flag": "--incremental/--full"},
    )


class CardExpiryOptions(JobOptions):
    days: int | None = Field(
        default=None,
        ge=0,
        le=3650,
        description=(
            "Report cards expiring within this many days [default: [card_expiry] days, 30]."
        ),
    )
    all_cards: bool = Field(
        default=False,
        description=(
            "Every card of every customer (one request per customer), not only the defaults."
        ),
    )
    send: bool = Field(
        default=False, description="Email the due reminders (default: only list them)."
    )
    preview: bool = Field(
        default=False,
        description=(
            "Write the due reminders as they would be sent (recipient, subject, text) to "
            "reminders-preview.csv in the run folder; nothing is sent."
        ),
    )
    confirm_live: bool = Field(
        default=False,
        description=f"Allow --send in live mode (unattended: {CONFIRM_LIVE_VARIABLE}=1).",
    )
    # As in ReconcileOptions; default cards only (`all_cards` always lists every customer).
    incremental: bool | None = Field(
        default=None,
        description=_INCREMENTAL_HELP,
        json_schema_extra={"flag": "--incremental/--full"},
    )

    @model_validator(mode="after")
    def _preview_or_send(self) -> CardExpiryOptions:
        if self.preview and self.send:
            raise ValueError(
                "--preview writes the reminders without sending them and --send sends them: "
                "choose one"
            )
        return self


class WriteJobOptions(JobOptions):
    """The jobs that write: a dry run unless `apply`."""

    apply: bool = Field(
        default=False, description="Carry the plan out (default: dry run, writes plan.csv only)."
    )
    max_changes: int = Field(
        default=DEFAULT_MAX_CHANGES,
        ge=0,
        description="Refuse, before the first write, a plan with more changes than this.",
    )
    confirm_live: bool = Field(
        default=False,
        description=f"Allow --apply in live mode (unattended: {CONFIRM_LIVE_VARIABLE}=1).",
    )


class LinkUsersOptions(WriteJobOptions):
    create_missing: bool = Field(
        default=False,
        description="Also create a customer for each user that has none and matches none.",
    )


OPTION_MODELS: Mapping[str, type[JobOptions]] = {
    "reconcile": ReconcileOptions,
    "card-expiry": CardExpiryOptions,
    "sync-metadata": WriteJobOptions,
    "link-users": LinkUsersOptions,
    "dedupe": WriteJobOptions,
    "gdpr-delete": WriteJobOptions,
    "default-payment-method": WriteJobOptions,
}


def parse_job_options(job: str, raw: Mapping[str, Any], *, where: str) -> JobOptions:
    """`raw` checked against `job`'s model; a ConfigError naming `where` and the option.

    `where` names the source as the user wrote it, e.g. `[schedule.jobs.dedupe]`.
    """
    model = OPTION_MODELS.get(job)
    if model is None:
        raise ConfigError(
            f"{where}: no job is called {job!r}; the jobs are {', '.join(sorted(OPTION_MODELS))}"
        )
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error.get("loc", ()))
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        if error.get("type") == "extra_forbidden":
            message = f"unknown option; {job} takes {', '.join(sorted(model.model_fields))}"
        else:
            message = explain_error(error)
        # A rule across options (a model validator) names no single option.
        at = f"{where} options.{name}" if name else where
        raise ConfigError(f"{at}: {message}{more}") from None


def scheduled_options(
    job: str, options: Mapping[str, Any], fail_on: str | None, *, where: str
) -> JobOptions:
    """A `[schedule.jobs.JOB]` table's options, its `fail_on` (the table's own setting,
    like `--fail-on`) folded in."""
    parsed = parse_job_options(job, options, where=where)
    if fail_on is None or parsed.fail_on == fail_on:
        return parsed
    if parsed.fail_on is not None:
        raise ConfigError(
            f"{where}: fail_on = {json.dumps(fail_on)} and options.fail_on = "
            f"{json.dumps(parsed.fail_on)} disagree: keep one of them"
        )
    return parsed.model_copy(update={"fail_on": fail_on})


def describe_value(value: Any) -> str:
    """A TOML value as a person would name it: `the string "false"`, `the number 3`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"the number {_bound(value)}" if math.isfinite(value) else f"{value!r}"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return f"a {type(value).__name__}"


_EXPECTED = {
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string (in double quotes)",
    "list_type": 'a list, e.g. ["a", "b"]',
    "dict_type": 'a table, e.g. { key = "value" }',
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def _bound(value: Any) -> str:
    # Float fields carry float bounds: "0", not "0.0".
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def explain_error(error: Mapping[str, Any]) -> str:
    """One pydantic error as a short phrase: what was expected, and what was given."""
    kind = str(error.get("type", ""))
    given = describe_value(error.get("input"))
    ctx = error.get("ctx") or {}
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {given}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected', 'one of the listed values')}, got {given}"
    if kind == "finite_number":
        return f"expected a finite number, got {given}"
    if kind == "greater_than_equal":
        return f"must be {_bound(ctx.get('ge'))} or more, got {given}"
    if kind == "greater_than":
        return f"must be more than {_bound(ctx.get('gt'))}, got {given}"
    if kind == "less_than_equal":
        return f"must be {_bound(ctx.get('le'))} or less, got {given}"
    if kind == "less_than":
        return f"must be less than {_bound(ctx.get('lt'))}, got {given}"
    if kind == "missing":
        return "required: add it"
    return str(error.get("msg", "invalid value")).removeprefix("Value error, ")


_CONFIRMED = ("1", "true", "yes")
_NOT_CONFIRMED = ("", "0", "false", "no")


def confirm_live_from_env(env: Mapping[str, str]) -> bool:
    """Whether STRIPE_RECONCILE_CONFIRM_LIVE confirms live-mode writes and sends.

    The one rule, for every command that writes or sends: 1, true or yes (any case) confirm;
    unset, empty, 0, false or no do not; anything else is a ConfigError, since a typo must
    neither confirm a live write nor pass unnoticed.
    """
    raw = env.get(CONFIRM_LIVE_VARIABLE)
    value = (raw or "").strip().lower()
    if value in _CONFIRMED:
        return True
    if value in _NOT_CONFIRMED:
        return False
    shown = raw if raw is not None and len(raw) <= 20 else f"{(raw or '')[:20]}..."
    raise ConfigError(
        f"{CONFIRM_LIVE_VARIABLE}={shown!r} is neither yes nor no: set it to 1, true or yes to "
        "confirm live-mode writes and sends, or to 0, false, no (or unset it) not to"
    )
