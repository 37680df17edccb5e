"""Cron expressions mean what crontab(5) says, field for field, and fire when cron would."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest

from jobs.scheduler import next_fire_times, trigger_for
from reconcile.rules.crontab import cron_matches, parse_crontab

START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)  # a Saturday


def fires(expression: str, count: int = 5, start: datetime = START) -> list[str]:
    trigger = trigger_for(parse_crontab(expression), start.tzinfo or UTC)  # type: ignore[arg-type]
    return [f"{t:%Y-%m-%d %H:%M %a}" for t in next_fire_times(trigger, start, count)]


def brute_force(expression: str, count: int, start: datetime = START) -> list[str]:
    """The reference: every minute from `start`, kept when cron's own rule matches."""
    spec = parse_crontab(expression)
    found, when = [], start.replace(second=0, microsecond=0)
    while len(found) < count:
        if cron_matches(spec, when):
            found.append(f"{when:%Y-%m-%d %H:%M %a}")
        when += timedelta(minutes=1)
    return found


def test_weekdays_are_monday_to_friday_not_tuesday_to_saturday() -> None:
    assert fires("0 3 * * 1-5") == [
        "2026-11-23 03:00 Mon",
        "2026-11-24 03:00 Tue",
        "2026-11-25 03:00 Wed",
        "2026-11-26 03:00 Thu",
        "2026-11-27 03:00 Fri",
    ]


def test_zero_and_seven_are_sunday() -> None:
    sundays = [
        "2026-11-22 02:30 Sun",
        "2026-11-29 02:30 Sun",
        "2026-12-06 02:30 Sun",
    ]
    assert fires("30 2 * * 0", 3) == sundays
    assert fires("30 2 * * 7", 3) == sundays
    assert fires("30 2 * * sun", 3) == sundays


def test_steps_and_lists_in_hours_and_days() -> None:
    assert fires("0 */6 1,15 * *", 6) == [
        "2026-12-01 00:00 Tue",
        "2026-12-01 06:00 Tue",
        "2026-12-01 12:00 Tue",
        "2026-12-01 18:00 Tue",
        "2026-12-15 00:00 Tue",
        "2026-12-15 06:00 Tue",
    ]


def test_day_of_month_and_day_of_week_both_set_means_either() -> None:
    # crontab(5): "0 0 13 * 5" runs on every 13th AND every Friday.
    assert fires("0 0 13 * 5", 6) == [
        "2026-11-27 00:00 Fri",
        "2026-12-04 00:00 Fri",
        "2026-12-11 00:00 Fri",
        "2026-12-13 00:00 Sun",
        "2026-12-18 00:00 Fri",
        "2026-12-25 00:00 Fri",
    ]


def test_a_starred_day_field_with_a_step_keeps_the_and_rule() -> None:
    # `*/2` starts with `*`: cron ANDs it with the day of week (odd days that are Mondays).
    assert fires("0 9 */2 * mon", 3) == brute_force("0 9 */2 * mon", 3)
    assert all(line.endswith("Mon") for line in fires("0 9 */2 * mon", 3))


@pytest.mark.parametrize(
    "expression",
    [
        "0 3 * * 1-5",
        "30 2 * * 0",
        "0 */6 1,15 * *",
        "0 0 13 * 5",
        "15 4 * * 0,6",
        "0 12 * * 5-7",
        "0 22 * * 6-7",
        "0 22 * * fri-sat",
        "*/20 8-10 * * 2",
        "0 0 1 jan,jul *",
        "5 0 * * */2",
        "@weekly",
        "@daily",
    ],
)
def test_next_fire_times_agree_with_a_minute_by_minute_reading_of_crontab(
    expression: str,
) -> None:
    assert fires(expression, 5) == brute_force(expression, 5)


def test_fire_times_follow_the_configured_time_zone() -> None:
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    start = datetime(2026, 3, 27, 12, 0, tzinfo=berlin)  # DST begins on Sunday the 29th
    times = next_fire_times(trigger_for(parse_crontab("0 3 * * *"), berlin), start, 3)
    assert [t.astimezone(UTC).strftime("%m-%d %H:%M") for t in times] == [
        "03-28 02:00",
        "03-29 01:00",
        "03-30 01:00",
    ]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 3 * *", "has 4 fields"),
        ("60 3 * * *", "minute field: 60 is outside 0-59"),
        ("0 3 * * 8", "day of week field: 8 is outside 0-7"),
        ("0 3 * * 5-1", "runs backwards"),
        ("0 3 L * *", "day of month field"),
        ("0 3 * * mon#2", "day of week field"),
        ("5/10 * * * *", r"a step needs \* or a range"),
        ("@reboot", "unknown macro"),
    ],
)
def test_bad_expressions_name_the_field_at_fault(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_crontab(expression)
