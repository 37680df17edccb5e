"""Questions about the stored listings asked from outside the CheckpointStore."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reconcile.state.tables import listings_table

__all__ = ["other_listings"]


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
