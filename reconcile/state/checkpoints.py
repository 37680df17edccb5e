"""Listings and their window cursors in the state database: every statement over
`stripe_reconcile_run_listings` and `stripe_reconcile_checkpoints`.

A *listing* is one consistent snapshot: every customer created before a bound fixed
when it started, split into `created` windows. Its pages are stored as parts
in a work folder first (reconcile.listing); only then does a window's row here move on to
the new cursor (the last id stored) — the bookmark never runs ahead of the data. A run that
resumes adopts the listing of the run it resumes (`stripe_reconcile_run_listings` maps each
run to its listing), so a run resumed twice still finds it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reconcile.rules.listing_plan import ListingProfile
from reconcile.state.schema import ensure_schema
from reconcile.state.tables import (
    checkpoints_table,
    listing_profiles_table,
    listings_table,
    runs_table,
)

__all__ = [
    "CheckpointStore",
    "ListingRecord",
    "PageStored",
    "WindowCheckpoint",
    "WindowCut",
    "other_listings",
]


@dataclass(frozen=True)
class WindowCheckpoint:
    window: int
    created_gte: int | None
    created_lt: int
    last_id: str | None
    pages: int
    rows: int
    done: bool


@dataclass(frozen=True)
class PageStored:
    """A window's page is in the work folder: its cursor moves on to the page's last id."""

    window: int
    last_id: str | None
    pages: int
    rows: int
    done: bool


@dataclass(frozen=True)
class WindowCut:
    """`window` keeps `[at, lt)` and its cursor; `piece`, new and empty, takes `[gte, at)`."""

    window: int
    at: int
    piece: WindowCheckpoint


@dataclass(frozen=True)
class ListingRecord:
    run_id: str
    job: str
    listing_id: str
    created_lt: int
    work_dir: str
    resumed_from: str | None


def _window(row: sa.Row[object]) -> WindowCheckpoint:
    m = row._mapping
    return WindowCheckpoint(
        window=int(m["window"]),
        created_gte=None if m["created_gte"] is None else int(m["created_gte"]),
        created_lt=int(m["created_lt"]),
        last_id=m["last_id"],
        pages=int(m["pages"]),
        rows=int(m["rows"]),
        done=bool(m["done"]),
    )


def _empty_window(
    listing_id: str, window: int, created_gte: int | None, created_lt: int, now: float
) -> dict[str, object]:
    """The row of a window no page of which is stored yet."""
    return {
        "listing_id": listing_id,
        "window": window,
        "created_gte": created_gte,
        "created_lt": created_lt,
        "last_id": None,
        "pages": 0,
        "rows": 0,
        "done": False,
        "updated_at": now,
    }


def other_listings(engine: Engine, job: str, keep: str) -> list[tuple[str, str]]:
    """(listing id, work folder) of every listing of `job` recorded but `keep`, once each."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(listings_table.c.listing_id, listings_table.c.work_dir)
            .where(listings_table.c.job == job, listings_table.c.listing_id != keep)
            .distinct()
            .order_by(listings_table.c.listing_id)
        ).all()
    return [(str(listing_id), str(work_dir)) for listing_id, work_dir in rows]


class CheckpointStore:
    """Listings and their window cursors, on the state database's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        ensure_schema(engine)

    # Listings -----------------------------------------------------------------------

    def start_listing(
        self,
        run_id: str,
        job: str,
        *,
        created_lt: int,
        work_dir: str,
        windows: Sequence[tuple[int | None, int]],
    ) -> ListingRecord:
        """A fresh listing owned by `run_id`, with one empty checkpoint per window."""
        now = datetime.now(UTC).timestamp()
        with self.engine.begin() as conn:
            conn.execute(
                listings_table.insert().values(
                    run_id=run_id,
                    job=job,
                    listing_id=run_id,
                    created_lt=created_lt,
                    work_dir=work_dir,
                    resumed_from=None,
                )
            )
            conn.execute(
                checkpoints_table.insert(),
                [
                    _empty_window(run_id, index, gte, lt, now)
                    for index, (gte, lt) in enumerate(windows)
                ],
            )
        return ListingRecord(run_id, job, run_id, created_lt, work_dir, None)

    def adopt_listing(self, run_id: str, previous_run_id: str) -> ListingRecord | None:
        """Let `run_id` continue the listing of `previous_run_id`; None if it had none."""
        previous = self.listing_of(previous_run_id)
        if previous is None:
            return None
        with self.engine.begin() as conn:
            conn.execute(
                listings_table.insert().values(
                    run_id=run_id,
                    job=previous.job,
                    listing_id=previous.listing_id,
                    created_lt=previous.created_lt,
                    work_dir=previous.work_dir,
                    resumed_from=previous_run_id,
                )
            )
            # Outlives the listing's rows, for `runs show`.
            conn.execute(
                runs_table.update()
                .where(runs_table.c.run_id == run_id)
                .values(resumed_from=previous_run_id)
            )
        return ListingRecord(
            run_id,
            previous.job,
            previous.listing_id,
            previous.created_lt,
            previous.work_dir,
            previous_run_id,
        )

    def listing_of(self, run_id: str) -> ListingRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                listings_table.select().where(listings_table.c.run_id == run_id)
            ).one_or_none()
        if row is None:
            return None
        return ListingRecord(
            row.run_id, row.job, row.listing_id, int(row.created_lt), row.work_dir, row.resumed_from
        )

    def windows(self, listing_id: str) -> list[WindowCheckpoint]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                checkpoints_table.select()
                .where(checkpoints_table.c.listing_id == listing_id)
                .order_by(checkpoints_table.c.window)
            ).all()
        return [_window(row) for row in rows]

    def apply(self, listing_id: str, changes: Sequence[PageStored | WindowCut]) -> None:
        """Apply changes in their order, in one transaction: the listing's checkpoints
        after any prefix of a run's changes are a state it went through, so committing
        them in batches (as `listing` does) loses at most the pages of the last batch."""
        if not changes:
            return
        now = datetime.now(UTC).timestamp()
        table = checkpoints_table
        with self.engine.begin() as conn:
            for change in changes:
                where = (table.c.listing_id == listing_id, table.c.window == change.window)
                if isinstance(change, PageStored):
                    conn.execute(
                        table.update()
                        .where(*where)
                        .values(
                            last_id=change.last_id,
                            pages=change.pages,
                            rows=change.rows,
                            done=change.done,
                            updated_at=now,
                        )
                    )
                    continue
                piece = change.piece
                conn.execute(
                    table.update().where(*where).values(created_gte=change.at, updated_at=now)
                )
                conn.execute(
                    table.insert().values(
                        _empty_window(
                            listing_id, piece.window, piece.created_gte, piece.created_lt, now
                        )
                    )
                )

    def profile(self, account: str, mode: str) -> ListingProfile | None:
        """The shape of the account's last complete listing in `mode`, if one was kept."""
        table = listing_profiles_table
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(table.c.created_lt, table.c.customers, table.c.marks).where(
                    table.c.account == account, table.c.mode == mode
                )
            ).first()
        if row is None:
            return None
        marks = tuple((int(second), int(before)) for second, before in json.loads(row.marks))
        return ListingProfile(int(row.created_lt), int(row.customers), marks)

    def save_profile(self, account: str, mode: str, profile: ListingProfile) -> None:
        """Keep `profile` as the account's last complete listing in `mode`, unless one of a
        later listing is kept already (two jobs may finish in either order)."""
        table = listing_profiles_table
        key = (table.c.account == account, table.c.mode == mode)
        values = {
            "created_lt": profile.created_lt,
            "customers": profile.customers,
            "marks": json.dumps(profile.marks, separators=(",", ":")),
            "recorded_at": datetime.now(UTC),
        }
        with self.engine.begin() as conn:
            kept = conn.execute(sa.select(table.c.created_lt).where(*key)).scalar()
            if kept is None:
                conn.execute(table.insert().values(account=account, mode=mode, **values))
            elif kept <= profile.created_lt:
                conn.execute(table.update().where(*key).values(**values))

    def extend_listing(self, run_id: str, created_lt: int) -> ListingRecord:
        """Move `run_id`'s snapshot bound up to `created_lt`, with a new window for the gap."""
        listing = self.listing_of(run_id)
        if listing is None:
            raise ValueError(f"run {run_id} has no listing to extend")
        if created_lt <= listing.created_lt:
            return listing
        now = datetime.now(UTC).timestamp()
        windows = self.windows(listing.listing_id)
        with self.engine.begin() as conn:
            window = max((w.window for w in windows), default=-1) + 1
            conn.execute(
                checkpoints_table.insert().values(
                    _empty_window(listing.listing_id, window, listing.created_lt, created_lt, now)
                )
            )
            conn.execute(
                listings_table.update()
                .where(listings_table.c.run_id == run_id)
                .values(created_lt=created_lt)
            )
        return ListingRecord(
            run_id,
            listing.job,
            listing.listing_id,
            created_lt,
            listing.work_dir,
            listing.resumed_from,
        )

    def forget_listing(self, listing_id: str) -> None:
        """Drop the listing: its cursors and the row of every run that walked it, together
        (the parts go with them), so the tables hold only listings a run may still resume."""
        with self.engine.begin() as conn:
            conn.execute(
                checkpoints_table.delete().where(checkpoints_table.c.listing_id == listing_id)
            )
            conn.execute(listings_table.delete().where(listings_table.c.listing_id == listing_id))
