"""Stripe's read allocation: every run's reads recorded, a monthly budget kept to.

Stripe caps the GET requests of an account over a rolling 30 days (see
`../shared/stripe-notes.md`). Every run records its reads (and, when it scanned the
whole account, how many customers it saw) in `stripe_reconcile_run_reads`. With
`[stripe] monthly_read_budget` set, a run warns once 80 % of the budget is used and is
refused, before its first request, when its estimate would exceed what is left:
⌈customers / 100⌉ for the listing (one page of 100 per read) plus one read per
customer for `card-expiry --all-cards`. The customer count is the last recorded one of
the same job, else of any job; with none recorded the estimate is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from reconcile.errors import ConfigError
from reconcile.logs import get_logger
from reconcile.state.store import StateStore
from reconcile.state.tables import reads_table

__all__ = [
    "BUDGET_WINDOW",
    "WARN_SHARE",
    "BudgetUse",
    "check_read_budget",
    "estimate_reads",
    "format_reads_line",
    "last_customer_count",
    "reads_by_job",
    "reads_table",
    "record_reads",
]

log = get_logger(__name__)

BUDGET_WINDOW = timedelta(days=30)
WARN_SHARE = 0.8
PAGE_SIZE = 100  # customers per list page: one read each


@dataclass(frozen=True)
class BudgetUse:
    used: int
    budget: int

    @property
    def left(self) -> int:
        return max(self.budget - self.used, 0)

    @property
    def share(self) -> float:
        return self.used / self.budget if self.budget else 0.0


def record_reads(
    state: StateStore,
    run_id: str,
    *,
    job: str,
    mode: str,
    reads: int,
    customers: int | None,
    at: datetime,
) -> None:
    """Keep one run's reads (replacing what an earlier attempt of the same run kept)."""
    with state.engine.begin() as conn:
        conn.execute(reads_table.delete().where(reads_table.c.run_id == run_id))
        conn.execute(
            reads_table.insert().values(
                run_id=run_id,
                job=job,
                mode=mode,
                recorded_at=at,
                reads=reads,
                customers=customers,
            )
        )


def reads_by_job(state: StateStore, since: datetime, mode: str | None = None) -> dict[str, int]:
    """Reads recorded since `since`, by job (of `mode` only when given)."""
    query = (
        sa.select(reads_table.c.job, sa.func.sum(reads_table.c.reads, type_=sa.Integer()))
        .where(reads_table.c.recorded_at >= since)
        .group_by(reads_table.c.job)
        .order_by(reads_table.c.job)
    )
    if mode is not None:
        query = query.where(reads_table.c.mode == mode)
    with state.engine.connect() as conn:
        rows = conn.execute(query).all()
    return {str(row[0]): int(row[1] or 0) for row in rows}


def last_customer_count(state: StateStore, job: str, mode: str) -> int | None:
    """Customers seen by the last run that scanned them all: of `job`, else of any job."""
    base = (
        sa.select(reads_table.c.customers)
        .where(reads_table.c.customers.is_not(None), reads_table.c.mode == mode)
        .order_by(reads_table.c.recorded_at.desc())
        .limit(1)
    )
    with state.engine.connect() as conn:
        for query in (base.where(reads_table.c.job == job), base):
            found = conn.execute(query).scalar()
            if found is not None:
                return int(found)
    return None


def estimate_reads(customers: int | None, *, all_cards: bool) -> int | None:
    """Reads a full run will make: the listing's pages, plus a card scan per customer."""
    if customers is None:
        return None
    return math.ceil(customers / PAGE_SIZE) + (customers if all_cards else 0)


def check_read_budget(
    state: StateStore,
    *,
    job: str,
    mode: str,
    budget: int,
    options: Mapping[str, Any],
    now: datetime | None = None,
) -> BudgetUse | None:
    """Before a run's first request: warn at 80 % used, refuse a run that would overspend.

    Raises ConfigError (exit 2) naming the estimate, what is left and the setting.
    """
    if budget <= 0:
        return None
    at = now or datetime.now(UTC)
    use = BudgetUse(sum(reads_by_job(state, at - BUDGET_WINDOW, mode).values()), budget)
    if use.share >= WARN_SHARE:
        log.warning(
            "read budget mostly used",
            reads_30_days=use.used,
            monthly_read_budget=budget,
            used_percent=round(100 * use.share, 1),
        )
    all_cards = bool(options.get("all_cards", False))
    estimate = estimate_reads(last_customer_count(state, job, mode), all_cards=all_cards)
    if estimate is not None and estimate > use.left:
        advice = (
            "wait, raise the budget, or run without --all-cards"
            if all_cards
            else ("wait or raise the budget")
        )
        raise ConfigError(
            f"[stripe] monthly_read_budget = {budget}: this {job} run would make about "
            f"{estimate} reads and {use.left} are left ({use.used} used in the last 30 days): "
            + advice
        )
    return use


def format_reads_line(by_job: Mapping[str, int], budget: int) -> str:
    """The line under `runs`: reads over the last 30 days by job, and the budget's use."""
    total = sum(by_job.values())
    parts = ", ".join(f"{job} {reads}" for job, reads in by_job.items()) or "none"
    line = f"reads in the last 30 days: {total} ({parts})"
    if budget > 0:
        line += f"; monthly_read_budget {budget}: {100 * total / budget:.0f} % used"
    return line
