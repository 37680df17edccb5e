"""A run from typed options: the one path of `run JOB` commands and of `serve`'s fires.

The option models themselves live in reconcile.job_options (the settings check a
schedule's options at load); this module turns a checked `JobOptions` into a run: the
mapping the job reads, `--fail-on`, the emailed report, and the live confirmation read
from the environment once, at start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jobs.base import Job
from jobs.delivery import after_run_hooks
from jobs.runner import AfterRun, RunOutcome, execute_job
from reconcile.job_options import (
    OPTION_MODELS,
    JobOptions,
    confirm_live_from_env,
    parse_job_options,
)
from reconcile.settings import Settings

__all__ = ["OPTION_MODELS", "JobOptions", "check_live_variable", "parse_job_options", "run_job"]


def check_live_variable(env: Mapping[str, str] | None = None) -> bool:
    """STRIPE_RECONCILE_CONFIRM_LIVE read now, so a malformed value stops a command before
    it lists anything (ConfigError, exit 2), not at its first write."""
    return confirm_live_from_env(os.environ if env is None else env)


def run_job(
    job: Job,
    settings: Settings,
    options: JobOptions,
    *,
    out_dir: Path | None = None,
    extra: Mapping[str, Any] | None = None,
    after_run: Sequence[AfterRun] = (),
) -> RunOutcome:
    """Run `job` with checked options; `extra` adds runtime values (serve's stop event),
    `after_run` steps that run before the emailed report.

    The job receives the model's validated mapping (`JobContext.options`), not the model:
    jobs read it with `.get`, and runtime values (the stop event) travel beside it.
    """
    if not isinstance(options, job.options_model):
        raise TypeError(
            f"{job.name} takes {job.options_model.__name__}, not {type(options).__name__}"
        )
    if "confirm_live" in type(options).model_fields:
        check_live_variable()
    return execute_job(
        job,
        settings,
        out_dir=out_dir,
        options={**options.as_mapping(), **(extra or {})},
        fail_on=options.fail_on,
        after_run=[*after_run, *after_run_hooks(settings, options.email)],
    )
