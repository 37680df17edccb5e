"""`stripe-reconcile serve`: the `[schedule]` run in-process by APScheduler 3.

Each job gets a trigger built from its crontab(5) expression, field for field
(reconcile.rules.crontab expands each field itself, so APScheduler's Monday-based day of
week and its AND of day-of-month with day-of-week never leak in). One instance per
job at a time, missed runs coalesced into one, a misfire grace time, UTC unless
`[schedule] timezone` says otherwise. SIGTERM or SIGINT asks running jobs to stop at
their next stored page (they end `interrupted`, resumable), waits for them, and exits.
"""

from __future__ import annotations

import os
import signal
import threading
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_SCHEDULER_START,
    JobExecutionEvent,
    SchedulerEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from jobs.apply import CONFIRM_LIVE_ENV, confirm_live_from_env
from jobs.base import STOP_OPTION, Job
from jobs.delivery import after_run_hooks
from reconcile.errors import ConfigError, ReconcileError
from reconcile.job_options import JobOptions, scheduled_options
from reconcile.logs import get_logger
from reconcile.mode import Mode, mask_key
from reconcile.rules.crontab import CronSpec, parse_crontab
from reconcile.settings import Settings
from reconcile.unattended_settings import ScheduleEntry

__all__ = [
    "ScheduledJob",
    "build_scheduler",
    "check_live_confirmation",
    "format_fire_times",
    "next_fire_times",
    "scheduled_jobs",
    "serve",
    "trigger_for",
]

log = get_logger(__name__)


def _values(values: Iterable[int]) -> str:
    return ",".join(str(v) for v in sorted(values))


def _apscheduler_weekdays(weekdays: Iterable[int]) -> str:
    # crontab: 0 = Sunday .. 6 = Saturday; APScheduler: 0 = Monday .. 6 = Sunday.
    return _values((day - 1) % 7 for day in weekdays)


def trigger_for(spec: CronSpec, timezone: tzinfo) -> BaseTrigger:
    """An APScheduler trigger that fires exactly when cron would run `spec`."""

    def cron(day: str, day_of_week: str) -> CronTrigger:
        return CronTrigger(
            minute=_values(spec.minutes),
            hour=_values(spec.hours),
            day=day,
            month=_values(spec.months),
            day_of_week=day_of_week,
            timezone=timezone,
        )

    days, weekdays = _values(spec.days), _apscheduler_weekdays(spec.weekdays)
    if spec.dom_star or spec.dow_star:
        return cron(days, weekdays)
    # Both restricted: cron runs when either matches (crontab(5), "Note: ...").
    return OrTrigger([cron(days, "*"), cron("*", weekdays)])


def next_fire_times(trigger: BaseTrigger, start: datetime, count: int = 5) -> list[datetime]:
    """The next `count` fire times at or after `start` (an aware datetime)."""
    if start.tzinfo is None:
        raise ValueError("next_fire_times needs an aware start time, e.g. datetime.now(UTC)")
    times: list[datetime] = []
    previous: datetime | None = None
    now = start
    while len(times) < count:
        fire: datetime | None = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        times.append(fire)
        previous = now = fire
    return times


@dataclass(frozen=True)
class ScheduledJob:
    job: Job
    entry: ScheduleEntry
    spec: CronSpec
    trigger: BaseTrigger
    # The entry's options checked against the job's model, its fail_on folded in.
    options: JobOptions


def schedule_timezone(settings: Settings) -> tzinfo:
    name = settings.schedule.timezone
    return UTC if name.upper() == "UTC" else zoneinfo.ZoneInfo(name)


def scheduled_jobs(settings: Settings, registry: Mapping[str, Job]) -> list[ScheduledJob]:
    """The enabled `[schedule.jobs.NAME]` entries, checked against the known jobs."""
    tz = schedule_timezone(settings)
    found: list[ScheduledJob] = []
    for name, entry in settings.schedule.jobs.items():
        if name not in registry:
            raise ConfigError(
                f"[schedule.jobs.{name}]: no job is called {name!r}; "
                f"the jobs are {', '.join(sorted(registry))}"
            )
        options = scheduled_options(
            name, entry.options, entry.fail_on, where=f"[schedule.jobs.{name}]"
        )
        if not entry.enabled:
            continue
        spec = parse_crontab(entry.cron)
        found.append(ScheduledJob(registry[name], entry, spec, trigger_for(spec, tz), options))
    return found


# The options that make a run act on the outside world (a write, an email to a customer).
_ACTS = ("apply", "send")


def check_live_confirmation(
    settings: Settings, jobs: Iterable[ScheduledJob], env: Mapping[str, str]
) -> None:
    """Refuse, before anything runs, a schedule that would write or send in live mode
    without confirmation (the job's `confirm_live = true`, or the environment's)."""
    confirmed_by_env = confirm_live_from_env(env)  # a malformed value is refused here too
    acting = [s for s in jobs if any(s.options.as_mapping().get(k) is True for k in _ACTS)]
    if not acting or confirmed_by_env or settings.mode is not Mode.LIVE:
        return
    for scheduled in acting:
        if scheduled.options.as_mapping().get("confirm_live") is not True:
            raise ConfigError(
                f"[schedule.jobs.{scheduled.job.name}] writes or sends in live mode (key "
                f"{mask_key(settings.require_key())}) without confirmation: add "
                f"confirm_live = true to its options, or set {CONFIRM_LIVE_ENV}=1; "
                "nothing was run"
            )


def format_fire_times(times: Iterable[datetime]) -> list[str]:
    lines = []
    for when in times:
        local = f"{when:%Y-%m-%d %H:%M %a %Z}"
        utc = when.astimezone(UTC)
        lines.append(local if when.utcoffset() == utc.utcoffset() else f"{local} ({utc:%H:%M} UTC)")
    return lines


RunJob = Callable[[ScheduledJob, threading.Event], None]


class _Running:
    """Counts runs in progress, so a stop can wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    def __enter__(self) -> None:
        with self._idle:
            self._count += 1

    def __exit__(self, *_exc: object) -> None:
        with self._idle:
            self._count -= 1
            self._idle.notify_all()

    def wait_idle(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._count == 0)


def run_scheduled(settings: Settings) -> RunJob:
    """What a fire does: one run through the runner; its errors are logged, never raised."""

    def run(scheduled: ScheduledJob, stop: threading.Event) -> None:
        from jobs.options import run_job

        entry = scheduled.entry
        try:
            # The same path as a `run JOB` command with the same options.
            outcome = run_job(
                scheduled.job,
                settings,
                scheduled.options,
                out_dir=Path(entry.out) if entry.out else None,
                extra={STOP_OPTION: stop},
            )
        except ReconcileError as exc:
            log.error(
                "scheduled run failed",
                scheduled_job=scheduled.job.name,
                exit_code=exc.exit_code,
                reason=exc.message,
            )
        except Exception:
            log.exception(
                "scheduled run failed with an internal error", scheduled_job=scheduled.job.name
            )
        else:
            log.info(
                "scheduled run finished",
                scheduled_job=scheduled.job.name,
                exit_code=outcome.exit_code,
                report_dir=str(outcome.run_dir),
            )

    return run


def build_scheduler(
    settings: Settings,
    jobs: list[ScheduledJob],
    run: RunJob,
    stop: threading.Event,
    running: _Running,
    *,
    run_now: bool = False,
) -> BlockingScheduler:
    scheduler = BlockingScheduler(
        timezone=schedule_timezone(settings),
        executors={"default": ThreadPoolExecutor(max(1, len(jobs)))},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": settings.schedule.misfire_grace_seconds,
        },
    )

    def fire(scheduled: ScheduledJob) -> None:
        with running:
            if not stop.is_set():
                run(scheduled, stop)

    for scheduled in jobs:
        extra: dict[str, Any] = {"next_run_time": datetime.now(UTC)} if run_now else {}
        scheduler.add_job(
            fire,
            scheduled.trigger,
            args=(scheduled,),
            id=scheduled.job.name,
            name=scheduled.job.name,
            **extra,
        )

    def missed(event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            log.warning(
                "scheduled run missed (later than the misfire grace time)",
                scheduled_job=event.job_id,
                scheduled_for=str(event.scheduled_run_time),
            )
        else:
            log.warning(
                "scheduled run skipped: the last one still runs", scheduled_job=event.job_id
            )

    scheduler.add_listener(missed, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    return scheduler


def serve(
    settings: Settings,
    registry: Mapping[str, Job],
    *,
    run: RunJob | None = None,
    run_now: bool = False,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run the schedule in the foreground until SIGTERM or SIGINT; returns after a clean stop."""
    jobs = scheduled_jobs(settings, registry)
    if not jobs:
        raise ConfigError(
            "[schedule] has no jobs: add e.g. [schedule.jobs.reconcile] with "
            'cron = "17 3 * * *" to the configuration'
        )
    check_live_confirmation(settings, jobs, os.environ if env is None else env)
    for scheduled in jobs:
        # A report that could never be emailed (no recipients, no password) is refused
        # now, not at the first fire.
        after_run_hooks(settings, scheduled.options.email)
    stop = threading.Event()
    running = _Running()
    scheduler = build_scheduler(
        settings, jobs, run or run_scheduled(settings), stop, running, run_now=run_now
    )

    received: list[str] = []
    shutting = threading.Lock()

    def shut_down() -> None:
        with shutting:
            if scheduler.running:
                scheduler.shutdown(wait=False)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # Only flags here: the main thread may hold the log's or the scheduler's locks at
        # this instant, so logging or shutting down from the handler could deadlock.
        received.append(signal.Signals(signum).name)
        stop.set()

    def watch() -> None:
        stop.wait()
        log.info(
            "stopping: running jobs stop at their next checkpoint",
            signal=received[0] if received else None,
        )
        shut_down()

    def started(_event: SchedulerEvent) -> None:
        # The scheduler is running from here on, so the watcher can stop it; a signal that
        # came just before is honoured here (start() then returns at once).
        log.info("scheduler started", jobs=len(jobs))
        if stop.is_set():
            shut_down()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        now = datetime.now(UTC)
        for scheduled in jobs:
            first = next_fire_times(scheduled.trigger, now, 1)
            log.info(
                "scheduled",
                scheduled_job=scheduled.job.name,
                cron=scheduled.entry.cron,
                timezone=settings.schedule.timezone,
                next_run=first[0].isoformat() if first else None,
            )
        scheduler.add_listener(started, EVENT_SCHEDULER_START)
        threading.Thread(target=watch, name="serve-stop", daemon=True).start()
        if not stop.is_set():
            scheduler.start()
        running.wait_idle()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("scheduler stopped")
