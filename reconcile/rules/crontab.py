"""crontab(5) expressions, parsed exactly as cron reads them, into sets of values.

Each field becomes the explicit set of values it allows, so nothing depends on
another library's reading of the syntax. Two crontab rules other parsers get wrong:

- day of week counts from Sunday: 0 and 7 are Sunday, 1 is Monday (APScheduler's
  own cron fields count 0 = Monday);
- when both day of month and day of week are restricted (neither starts with ``*``),
  a day matches if EITHER matches (``0 0 13 * 5``: every 13th and every Friday).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

__all__ = ["MACROS", "CronSpec", "cron_matches", "parse_crontab"]

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_ITEM = re.compile(r"^(?P<range>\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>[0-9]+))?$")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    names_start: int = 0


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    # 7 is Sunday too; folded onto 0 after parsing.
    _Field("day of week", 0, 7, _DAYS, 0),
)


@dataclass(frozen=True)
class CronSpec:
    """The values each field allows; `weekdays` in crontab numbering (0 = Sunday .. 6)."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    # A field that starts with `*` is unrestricted for the day-of-month/day-of-week rule.
    dom_star: bool
    dow_star: bool


def _value(text: str, spec: _Field, expression: str) -> int:
    lowered = text.lower()
    if spec.names and lowered in spec.names:
        return spec.names.index(lowered) + spec.names_start
    if not text.isdigit():
        raise ValueError(_bad(expression, spec, f"{text!r} is not a number"))
    number = int(text)
    if not spec.low <= number <= spec.high:
        raise ValueError(_bad(expression, spec, f"{number} is outside {spec.low}-{spec.high}"))
    return number


def _bad(expression: str, spec: _Field, why: str) -> str:
    return f"cron expression {expression!r}: {spec.name} field: {why}"


def _parse_field(text: str, spec: _Field, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            raise ValueError(_bad(expression, spec, f"{item!r} is not N, N-M, */S or N-M/S"))
        part, step_text = match.group("range"), match.group("step")
        step = int(step_text) if step_text is not None else 1
        if step < 1:
            raise ValueError(_bad(expression, spec, "a step must be 1 or more"))
        if part == "*":
            low, high = spec.low, spec.high
        elif "-" in part:
            first, last = part.split("-", 1)
            low, high = _value(first, spec, expression), _value(last, spec, expression)
            if low > high:
                raise ValueError(_bad(expression, spec, f"range {part!r} runs backwards"))
        else:
            if step_text is not None:
                # Vixie cron rejects N/S; so do we rather than guess at its meaning.
                raise ValueError(_bad(expression, spec, f"{item!r}: a step needs * or a range"))
            low = high = _value(part, spec, expression)
        values.update(range(low, high + 1, step))
    return frozenset(values)


def parse_crontab(expression: str) -> CronSpec:
    """Five fields (or a macro such as @daily); raises ValueError naming the field at fault."""
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise ValueError(
                f"cron expression {expression!r}: unknown macro; use five fields or one of "
                f"{', '.join(MACROS)} (@reboot has no meaning for a scheduler)"
            )
        text = MACROS[text.lower()]
    fields = text.split(" ")
    if len(fields) != 5:
        raise ValueError(
            f"cron expression {expression!r} has {len(fields)} fields: crontab(5) uses five, "
            "minute hour day-of-month month day-of-week (e.g. '17 3 * * *')"
        )
    parsed = [_parse_field(f, spec, expression) for f, spec in zip(fields, _FIELDS, strict=True)]
    weekdays = frozenset(day % 7 for day in parsed[4])
    return CronSpec(
        expression=expression.strip(),
        minutes=parsed[0],
        hours=parsed[1],
        days=parsed[2],
        months=parsed[3],
        weekdays=weekdays,
        dom_star=fields[2].startswith("*"),
        dow_star=fields[4].startswith("*"),
    )


def cron_matches(spec: CronSpec, when: datetime) -> bool:
    """Whether cron would start the job at `when` (its minute), read in `when`'s own zone."""
    if when.minute not in spec.minutes or when.hour not in spec.hours:
        return False
    if when.month not in spec.months:
        return False
    day_ok = when.day in spec.days
    # Python: Monday = 0; crontab: Sunday = 0.
    weekday_ok = (when.weekday() + 1) % 7 in spec.weekdays
    if spec.dom_star or spec.dow_star:
        return day_ok and weekday_ok
    return day_ok or weekday_ok
