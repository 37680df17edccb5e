"""The resumable customer listing of a job's run, from the job's context.

The listing (reconcile.listing.resume) takes what it needs explicitly; this is where a
job's context, settings and options become those arguments. A job whose listing is
certain to be a full one starts it early (`start_listing`): its first pages arrive while
pandas is imported and the users are read.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from jobs.base import STOP_OPTION, JobContext, resume_requested
from reconcile.listing.resume import ListingRun
from reconcile.logs import get_logger

if TYPE_CHECKING:
    import pandas as pd

    from jobs.incremental import ListingPlan

__all__ = [
    "FIRST_REQUEST_WAIT",
    "await_first_page",
    "full_listing_certain",
    "listing_run",
    "start_listing",
    "users_and_plan",
]

T = TypeVar("T")


def listing_run(ctx: JobContext, job: str) -> ListingRun:
    """The run `ctx` as the listing of `job` sees it."""
    resume = ctx.settings.resume
    stop = ctx.options.get(STOP_OPTION)
    return ListingRun(
        state=ctx.state,
        gateway=ctx.gateway,
        job=job,
        run_id=ctx.run_id,
        started_at=ctx.started_at,
        out_dir=ctx.out_dir,
        resume_requested=resume_requested(ctx.options),
        auto_resume=resume.auto,
        max_age=timedelta(hours=resume.max_age_hours),
        windows=resume.windows,
        file_mode=ctx.settings.reports.file_mode,
        stop=stop if isinstance(stop, threading.Event) else None,
        phase=ctx.phase,
    )


# At most this long a run's other reading waits for the listing's first page (a slow answer,
# or a limiter shared with other processes, may hold it back longer: it goes ahead then).
FIRST_REQUEST_WAIT = 1.0


def full_listing_certain(ctx: JobContext) -> bool:
    """Whether the run lists every customer and keeps no mirror, whatever the mirror holds:
    incremental neither asked for nor enabled (jobs.incremental.choose_listing's first case)."""
    requested = ctx.options.get("incremental")
    return requested in (None, False) and not ctx.settings.incremental.enabled


def start_listing(ctx: JobContext, job: str, walk: Callable[[ListingRun], T]) -> Future[T]:
    """`walk` over the listing of `job`, in a thread of its own from now, in this context
    (run id, --resume)."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="listing")
    context = contextvars.copy_context()
    future = executor.submit(context.run, walk, listing_run(ctx, job))
    executor.shutdown(wait=False)
    return future


def await_first_page(ctx: JobContext, listing: Future[Any], sent: int) -> None:
    """Until the listing's first page is back (its second request is counted, or the listing
    ended), at most FIRST_REQUEST_WAIT: importing pandas meanwhile holds the interpreter the
    listing needs to send its first request. Counted attempts are the only sign the gateway
    gives, and an attempt is counted just before it is sent, so the first one is not enough."""
    deadline = time.monotonic() + FIRST_REQUEST_WAIT
    while ctx.gateway.stats.total < sent + 2 and not listing.done() and time.monotonic() < deadline:
        time.sleep(0.005)


def users_and_plan(
    ctx: JobContext,
    job: str,
    metadata_keys: Sequence[str],
    early: Future[Any] | None,
    sent: int,
    *,
    all_cards: bool = False,
) -> tuple[pd.DataFrame, ListingPlan]:
    """Read the users and plan the listing, while `early` (the listing started before the
    plan, `sent` requests into the run) brings its pages. A listing the plan did not choose
    is a bug, never a listing silently dropped."""
    try:
        if early is not None:
            await_first_page(ctx, early, sent)
        with ctx.phase("users"):
            users = ctx.userdb.read_users()
        get_logger(__name__).info("users read", users=len(users))
        # Imported here: it brings pandas, which the early listing's first request must not
        # wait for.
        from jobs.incremental import plan_listing

        plan = plan_listing(ctx, job, metadata_keys, all_cards=all_cards)
    except BaseException:
        if early is not None:
            # The listing is recorded with the run: let it finish (or stop) before failing.
            early.exception()
        raise
    if early is not None and (plan.choice.listing != "full" or plan.choice.keep_mirror):
        early.exception()
        raise RuntimeError(f"listing started before the plan, which chose {plan.choice}")
    return users, plan
