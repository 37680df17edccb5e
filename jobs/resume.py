"""Resumable listings for jobs: start one, or adopt the one a failed run left behind.

A job calls `list_customers(ctx)` instead of paging itself. With `--resume` (the job
option `resume`), or with `[resume] auto = true` and a failed or interrupted last run
younger than `[resume] max_age_hours`, the run continues that run's listing: same
snapshot bound, the stored pages read back, only the rest fetched. Otherwise it starts
a fresh listing and clears listings that earlier failed runs left behind (they hold
personal data). The work folder and checkpoints go once the report is in place
(`forget_listing`, an AfterRun step).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from jobs.base import STOP_OPTION, JobContext
from reconcile.listing.checkpoints import (
    CheckpointStore,
    ListingRecord,
    WindowCheckpoint,
    listings_table,
)
from reconcile.listing.parts import read_parts, remove_work_dir, work_dir_for
from reconcile.listing.walk import (
    OnPage,
    listing_frame,
    merge_records,
    page_windows,
    window_bounds,
    workers_for,
)
from reconcile.logs import get_logger
from reconcile.progress import progress
from reconcile.settings import Settings
from reconcile.state.store import RunRecord, RunStatus, StateStore

if TYPE_CHECKING:
    from jobs.runner import RunOutcome

__all__ = [
    "RESUME_OPTION",
    "RESUME_REQUESTED",
    "forget_listing",
    "list_customers",
    "list_customers_frame",
    "open_listing",
    "resumable_run",
]

log = get_logger(__name__)

RESUME_OPTION = "resume"
_RESUMABLE = (RunStatus.FAILED, RunStatus.INTERRUPTED)
# Set by the `--resume` flag every `run JOB` command gets (jobs.commands.runs), so jobs
# whose commands build their own options resume too.
RESUME_REQUESTED: ContextVar[bool] = ContextVar("resume_requested", default=False)


def resumable_run(
    state: StateStore,
    job: str,
    current_run_id: str,
    *,
    now: datetime,
    max_age: timedelta | None,
    mode: str | None = None,
) -> RunRecord | None:
    """The job's last run before this one, if it failed or was interrupted (and is young),
    and listed in the same mode: pages listed under the other mode's key are another world.
    """
    for record in state.list_runs(job, limit=5):
        if record.run_id == current_run_id:
            continue
        if record.status not in _RESUMABLE:
            return None
        if max_age is not None and now - record.started_at > max_age:
            return None
        if mode is not None and record.mode is not None and record.mode != mode:
            log.warning("the last run listed in the other mode: not resuming it", mode=mode)
            return None
        return record
    return None


def _sweep_abandoned(store: CheckpointStore, job: str, keep: str) -> None:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(listings_table.c.listing_id, listings_table.c.work_dir)
            .where(listings_table.c.job == job, listings_table.c.listing_id != keep)
            .distinct()
        ).all()
    for listing_id, work_dir in ((str(a), str(b)) for a, b in rows):
        if store.windows(listing_id) or Path(work_dir).exists():
            remove_work_dir(Path(work_dir))
            store.forget_listing(listing_id)
            log.info("removed the listing of an earlier failed run", listing_id=listing_id)


def _adopt(ctx: JobContext, store: CheckpointStore, job: str) -> ListingRecord | None:
    explicit = bool(ctx.options.get(RESUME_OPTION)) or RESUME_REQUESTED.get()
    settings = ctx.settings.resume
    if not explicit and not settings.auto:
        return None
    max_age = None if explicit else timedelta(hours=settings.max_age_hours)
    previous = resumable_run(
        ctx.state,
        job,
        ctx.run_id,
        now=ctx.started_at,
        max_age=max_age,
        mode=ctx.gateway.mode.value,
    )
    if previous is None:
        log.info("nothing to resume: starting a fresh listing")
        return None
    listing = store.listing_of(previous.run_id)
    if listing is None or not store.windows(listing.listing_id):
        log.info("the last run stored no listing: starting afresh", resumed_run=previous.run_id)
        return None
    windows = store.windows(listing.listing_id)
    if any(w.pages for w in windows) and not Path(listing.work_dir).is_dir():
        log.warning(
            "the last run's work folder is gone: starting afresh", work_dir=listing.work_dir
        )
        return None
    adopted = store.adopt_listing(ctx.run_id, previous.run_id)
    log.info(
        "resuming",
        resumed_run=previous.run_id,
        listing_id=listing.listing_id,
        created_lt=listing.created_lt,
    )
    return adopted


def open_listing(
    ctx: JobContext, job: str, *, bound_offset: int = 0, extend_on_resume: bool = False
) -> tuple[CheckpointStore, ListingRecord]:
    """This run's listing: adopted from a failed run, or fresh with its windows.

    The bound is the run's start plus `bound_offset` seconds. With `extend_on_resume`, an
    adopted listing also gets a window up to this run's bound: a job that writes must see
    the customers the run it resumes created after that run's bound.
    """
    store = CheckpointStore(ctx.state.engine)
    created_lt = int(ctx.started_at.timestamp()) + bound_offset
    adopted = _adopt(ctx, store, job)
    if adopted is not None:
        if extend_on_resume:
            adopted = store.extend_listing(ctx.run_id, created_lt)
        return store, adopted
    work_dir = work_dir_for(Path(ctx.out_dir).absolute(), job, ctx.run_id)
    listing = store.start_listing(
        ctx.run_id,
        job,
        created_lt=created_lt,
        work_dir=str(work_dir),
        windows=window_bounds(created_lt, ctx.settings.resume.windows),
    )
    _sweep_abandoned(store, job, keep=listing.listing_id)
    return store, listing


def list_customers(
    ctx: JobContext,
    job: str,
    *,
    expand: Sequence[str] = (),
    on_page: OnPage | None = None,
    bound_offset: int = 0,
    extend_on_resume: bool = False,
    keep: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], ListingRecord]:
    """Every customer created before the listing's bound, resuming where the options say.

    Newest first, ties by id. `on_page` sees each page fetched by this run as it arrives
    (not the pages a resumed run reads back), so per-customer calls can start early.
    `keep(record)` trims each customer as its page is read back (only what the job
    needs is held for the whole listing).
    """
    finished, listing = _page(
        ctx,
        job,
        expand=expand,
        on_page=on_page,
        bound_offset=bound_offset,
        extend_on_resume=extend_on_resume,
    )
    work_dir = Path(listing.work_dir)
    pages = [(c.window, c.pages) for c in finished]
    return merge_records(read_parts(work_dir, pages, keep)), listing


def list_customers_frame(
    ctx: JobContext, job: str, metadata_keys: Sequence[str]
) -> tuple[pd.DataFrame, ListingRecord]:
    """The same listing as the customers snapshot, built from the stored pages by Arrow:
    no Python object per customer, for jobs that need only the snapshot."""
    finished, listing = _page(ctx, job)
    with ctx.phase("snapshot"):
        return listing_frame(Path(listing.work_dir), finished, metadata_keys), listing


def _page(
    ctx: JobContext,
    job: str,
    *,
    expand: Sequence[str] = (),
    on_page: OnPage | None = None,
    bound_offset: int = 0,
    extend_on_resume: bool = False,
) -> tuple[list[WindowCheckpoint], ListingRecord]:
    store, listing = open_listing(
        ctx, job, bound_offset=bound_offset, extend_on_resume=extend_on_resume
    )
    stop = ctx.options.get(STOP_OPTION)
    limiter = ctx.gateway.limiter
    with ctx.phase("listing"), progress("listing customers") as advance:
        finished = page_windows(
            ctx.gateway,
            store,
            listing.listing_id,
            Path(listing.work_dir),
            workers=workers_for(min(limiter.global_limit, limiter.per_endpoint_limit)),
            expand=expand,
            stop=stop if isinstance(stop, threading.Event) else None,
            advance=advance,
            on_page=on_page,
            file_mode=ctx.settings.reports.file_mode,
            on_resume=lambda rows, pages: log.info(
                "stored pages read back", customers=rows, pages=pages
            ),
        )
    return finished, listing


def forget_listing(outcome: RunOutcome, settings: Settings) -> None:
    """AfterRun: the report is in place, so the run's work folder and cursors can go."""
    try:
        state = StateStore(settings.state.url)
    except Exception as exc:  # never turn a finished run into a failure over cleanup
        log.warning("could not open the state database to clean up", error=type(exc).__name__)
        return
    try:
        store = CheckpointStore(state.engine)
        listing = store.listing_of(outcome.run_id)
        if listing is not None:
            remove_work_dir(Path(listing.work_dir))
            store.forget_listing(listing.listing_id)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("could not clean up the listing", error=type(exc).__name__)
    finally:
        state.close()
