"""What was reminded: one row per (mode, card, expiry), so no card hears twice about one expiry.

Its table in the state database is `stripe_reconcile_reminders`. The expiry is part of the
key: a card that Stripe's updater moved to a new expiry is a new reminder, months later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reconcile.state.schema import ensure_schema
from reconcile.state.tables import reminders_table

__all__ = ["HISTORY_COLUMNS", "ReminderMemory", "SentReminder", "reminders_table"]

HISTORY_COLUMNS = ("payment_method_id", "exp_year", "exp_month", "last_sent_at", "times_sent")


@dataclass(frozen=True)
class SentReminder:
    payment_method_id: str
    customer_id: str
    exp_year: int
    exp_month: int


class ReminderMemory:
    """The reminders sent in one mode (test and live never share memory)."""

    def __init__(self, engine: Engine, mode: str) -> None:
        self._engine = engine
        self._mode = mode
        ensure_schema(engine)

    def history(self, payment_method_ids: list[str]) -> pd.DataFrame:
        """Past reminders of these cards: `HISTORY_COLUMNS`, one row per card and expiry."""
        rows: list[tuple[object, ...]] = []
        t = reminders_table
        with self._engine.connect() as conn:
            # Chunked: an IN list of a million ids is more than some servers accept.
            for start in range(0, len(payment_method_ids), 5000):
                chunk = payment_method_ids[start : start + 5000]
                rows += conn.execute(
                    sa.select(
                        t.c.payment_method_id,
                        t.c.exp_year,
                        t.c.exp_month,
                        t.c.last_sent_at,
                        t.c.times_sent,
                    ).where(t.c.mode == self._mode, t.c.payment_method_id.in_(chunk))
                ).all()
        return pd.DataFrame.from_records(rows, columns=list(HISTORY_COLUMNS))

    def record(self, sent: SentReminder, *, at: datetime, run_id: str) -> None:
        """Remember one sent reminder (the job's lease keeps writers to one at a time)."""
        t = reminders_table
        key = (
            (t.c.mode == self._mode)
            & (t.c.payment_method_id == sent.payment_method_id)
            & (t.c.exp_year == sent.exp_year)
            & (t.c.exp_month == sent.exp_month)
        )
        with self._engine.begin() as conn:
            updated = conn.execute(
                t.update()
                .where(key)
                .values(last_sent_at=at, times_sent=t.c.times_sent + 1, last_run_id=run_id)
            )
            if updated.rowcount == 0:
                conn.execute(
                    t.insert().values(
                        mode=self._mode,
                        payment_method_id=sent.payment_method_id,
                        exp_year=sent.exp_year,
                        exp_month=sent.exp_month,
                        customer_id=sent.customer_id,
                        first_sent_at=at,
                        last_sent_at=at,
                        times_sent=1,
                        last_run_id=run_id,
                    )
                )
