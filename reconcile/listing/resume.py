"""A run's resumable customer listing: open it, or adopt the one a failed run left behind.

A job walks the customers with `walk_customers` (or `walk_customers_frame`) instead of
paging itself, and says everything the listing needs in a `ListingRun`. When the run asks
to resume (`resume_requested`, the `--resume` flag), or resumes by itself (`auto_resume`)
and the job's last run failed or was interrupted less than `max_age` ago, the run continues
that run's listing: same snapshot bound, the stored pages read back, only the rest fetched.
Otherwise it starts a fresh listing and clears listings that earlier failed runs left
behind (they hold personal data). The work folder and checkpoints go once the report is in
place (`forget_listing`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from reconcile.listing.checkpoints import (
    CheckpointStore,
    ListingRecord,
    WindowCheckpoint,
)
from reconcile.listing.parts import read_parts, remove_work_dir, work_dir_for
from reconcile.listing.walk import (
    HeldPages,
    OnPage,
    listing_frame,
    merge_records,
    page_windows,
    window_bounds,
    workers_for,
)
from reconcile.logs import get_logger
from reconcile.progress import progress
from reconcile.rules.listing_plan import (
    ListingProfile,
    oldest_customer,
    planned_windows,
    profile_of,
)
from reconcile.state.listings import other_listings
from reconcile.state.store import RunRecord, RunStatus, StateStore
from reconcile.stripe_api.gateway import StripeGateway

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ListingRun",
    "forget_listing",
    "open_listing",
    "resumable_run",
    "walk_customers",
    "walk_customers_frame",
]

log = get_logger(__name__)

_RESUMABLE = (RunStatus.FAILED, RunStatus.INTERRUPTED)
# Windows a listing planned from the last one's shape starts with, per worker: windows
# that end on full pages cost nothing, and many short ones end together.
_PLANNED_WINDOWS_PER_WORKER = 8


def _untimed(_phase: str) -> AbstractContextManager[None]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class ListingRun:
    """The run that walks a listing, as the listing needs it.

    `job` keys the listing: a run adopts only a listing its job left. `started_at` fixes
    the listing's upper bound. `phase(name)` times a block of the listing ("listing" for
    the paging, "snapshot" for building the frame) for the run's summary.
    """

    state: StateStore
    gateway: StripeGateway
    job: str
    run_id: str
    started_at: datetime
    out_dir: Path
    # `--resume`: adopt the last failed or interrupted run's listing, however old.
    resume_requested: bool = False
    # `[resume] auto`: adopt it without being asked, when younger than `max_age`.
    auto_resume: bool = False
    max_age: timedelta = timedelta(hours=12)
    # `[resume] windows`: the created-date windows a fresh listing starts with.
    windows: int = 1
    file_mode: int = 0o600
    # Set, the listing stops after the page in hand (a signal, `serve` shutting down).
    stop: threading.Event | None = None
    phase: Callable[[str], AbstractContextManager[None]] = _untimed


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
    """Every other listing of the job goes: a fresh listing means none will be resumed
    (the job's runs hold its lock, so none is being walked)."""
    for listing_id, work_dir in other_listings(store.engine, job, keep):
        held_data = bool(store.windows(listing_id)) or Path(work_dir).exists()
        remove_work_dir(Path(work_dir))
        store.forget_listing(listing_id)
        if held_data:
            log.info("removed the listing of an earlier failed run", listing_id=listing_id)


def _adopt(run: ListingRun, store: CheckpointStore) -> ListingRecord | None:
    if not run.resume_requested and not run.auto_resume:
        return None
    # Asked for explicitly, the last run is resumed however old its listing is.
    max_age = None if run.resume_requested else run.max_age
    previous = resumable_run(
        run.state,
        run.job,
        run.run_id,
        now=run.started_at,
        max_age=max_age,
        mode=run.gateway.mode.value,
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
    adopted = store.adopt_listing(run.run_id, previous.run_id)
    log.info(
        "resuming",
        resumed_run=previous.run_id,
        listing_id=listing.listing_id,
        created_lt=listing.created_lt,
    )
    return adopted


def open_listing(
    run: ListingRun,
    store: CheckpointStore,
    *,
    bound_offset: int = 0,
    extend_on_resume: bool = False,
    shape: ListingProfile | None = None,
) -> ListingRecord:
    """This run's listing: adopted from a failed run, or fresh with its windows, cut by
    the account's last listing's `shape` when there is one.

    The bound is the run's start plus `bound_offset` seconds. With `extend_on_resume`, an
    adopted listing also gets a window up to this run's bound: a job that writes must see
    the customers the run it resumes created after that run's bound.
    """
    created_lt = int(run.started_at.timestamp()) + bound_offset
    adopted = _adopt(run, store)
    if adopted is not None:
        if extend_on_resume:
            adopted = store.extend_listing(run.run_id, created_lt)
        return adopted
    work_dir = work_dir_for(Path(run.out_dir).absolute(), run.job, run.run_id)
    listing = store.start_listing(
        run.run_id,
        run.job,
        created_lt=created_lt,
        work_dir=str(work_dir),
        windows=_fresh_windows(run, shape, created_lt),
    )
    _sweep_abandoned(store, run.job, keep=listing.listing_id)
    return listing


def _workers(run: ListingRun) -> int:
    limiter = run.gateway.limiter
    return workers_for(min(limiter.global_limit, limiter.per_endpoint_limit))


def _fresh_windows(
    run: ListingRun, profile: ListingProfile | None, created_lt: int
) -> list[tuple[int | None, int]]:
    """Cut where the account's last complete listing says every window ends on a full
    page (reconcile.rules.listing_plan); without one, the configured date windows."""
    if profile is None:
        return window_bounds(created_lt, run.windows)
    windows = planned_windows(profile, created_lt, _PLANNED_WINDOWS_PER_WORKER * _workers(run))
    log.info(
        "listing planned from the last one",
        windows=len(windows),
        last_customers=profile.customers,
        last_created_lt=profile.created_lt,
    )
    return windows


def _last_shape(run: ListingRun, store: CheckpointStore) -> ListingProfile | None:
    """The shape of the account's last complete listing in this mode, if one was kept."""
    try:
        return store.profile(run.gateway.account, run.gateway.mode.value)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("could not read the last listing's shape", error=type(exc).__name__)
        return None


def _remember_shape(run: ListingRun, listing: ListingRecord, created: list[int]) -> None:
    """Keep the shape of this complete listing for the account's next one. Never raises: a
    listing that could not be kept only costs the next one a few pages."""
    gateway = run.gateway
    try:
        CheckpointStore(run.state.engine).save_profile(
            gateway.account, gateway.mode.value, profile_of(created, listing.created_lt)
        )
    except sa.exc.SQLAlchemyError as exc:
        log.warning("could not keep the listing's shape", error=type(exc).__name__)


def walk_customers(
    run: ListingRun,
    *,
    expand: Sequence[str] = (),
    on_page: OnPage | None = None,
    bound_offset: int = 0,
    extend_on_resume: bool = False,
    keep: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], ListingRecord]:
    """Every customer created before the listing's bound, resuming where `run` says.

    Newest first, ties by id. `on_page` sees each page fetched by this run as it arrives
    (not the pages a resumed run reads back), so per-customer calls can start early.
    `keep(record)` trims each customer as its page arrives, before it is stored, and
    again as a resumed run's stored pages are read back (so it must give the same for
    a trimmed customer): only what the job needs is stored, decoded and held.
    """
    held: HeldPages = {}
    finished, listing = _page(
        run,
        expand=expand,
        on_page=on_page,
        bound_offset=bound_offset,
        extend_on_resume=extend_on_resume,
        keep=keep,
        held=held,
    )
    work_dir = Path(listing.work_dir)
    pages = [(c.window, c.pages) for c in finished]
    customers = merge_records(read_parts(work_dir, pages, keep, held))
    _remember_shape(run, listing, [int(c.get("created") or 0) for c in customers])
    return customers, listing


def walk_customers_frame(
    run: ListingRun, metadata_keys: Sequence[str]
) -> tuple[pd.DataFrame, ListingRecord]:
    """The same listing as the customers snapshot, built from the stored pages by Arrow:
    no Python object per customer, for jobs that need only the snapshot."""
    finished, listing = _page(run)
    with run.phase("snapshot"):
        frame = listing_frame(Path(listing.work_dir), finished, metadata_keys)
    _remember_shape(run, listing, frame["created"].tolist())
    return frame, listing


def _page(
    run: ListingRun,
    *,
    expand: Sequence[str] = (),
    on_page: OnPage | None = None,
    bound_offset: int = 0,
    extend_on_resume: bool = False,
    keep: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    held: HeldPages | None = None,
) -> tuple[list[WindowCheckpoint], ListingRecord]:
    store = CheckpointStore(run.state.engine)
    shape = _last_shape(run, store)
    listing = open_listing(
        run, store, bound_offset=bound_offset, extend_on_resume=extend_on_resume, shape=shape
    )
    with run.phase("listing"), progress("listing customers") as advance:
        finished = page_windows(
            run.gateway,
            store,
            listing.listing_id,
            Path(listing.work_dir),
            workers=_workers(run),
            expand=expand,
            stop=run.stop,
            advance=advance,
            on_page=on_page,
            file_mode=run.file_mode,
            on_resume=lambda rows, pages: log.info(
                "stored pages read back", customers=rows, pages=pages
            ),
            keep=keep,
            held=held,
            bottom=oldest_customer(shape) if shape is not None else None,
            planned=shape is not None,
        )
    return finished, listing


def forget_listing(state_url: str, run_id: str) -> None:
    """The report is in place, so the run's work folder and cursors can go.

    Never raises: a finished run is not turned into a failure over cleanup.
    """
    try:
        state = StateStore(state_url)
    except Exception as exc:
        log.warning("could not open the state database to clean up", error=type(exc).__name__)
        return
    try:
        store = CheckpointStore(state.engine)
        listing = store.listing_of(run_id)
        if listing is not None:
            remove_work_dir(Path(listing.work_dir))
            store.forget_listing(listing.listing_id)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("could not clean up the listing", error=type(exc).__name__)
    finally:
        state.close()
