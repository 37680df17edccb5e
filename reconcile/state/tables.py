"""Every table of the state database, on one MetaData, all named `stripe_reconcile_*`.

The prefix keeps a state URL that points at an application's database from ever
colliding with (or touching) its tables. The shapes here are the latest schema version;
`reconcile.state.schema` creates them on a fresh database and migrates an older one, so a
change to a table here goes with a migration there.

The modules of this package that use the tables (store, audit, history, reminders_sent,
read_budget, checkpoints) import them from here; nothing else declares a state table, and
nothing outside reconcile.state runs a statement over one.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "TABLE_PREFIX",
    "UTCDateTime",
    "as_utc",
    "audit_table",
    "checkpoints_table",
    "listing_profiles_table",
    "listings_table",
    "locks_table",
    "metadata",
    "reads_table",
    "reminders_table",
    "runs_table",
    "schema_version_table",
    "stats_table",
]

TABLE_PREFIX = "stripe_reconcile_"


def as_utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime (e.g. datetime.now(UTC)), not naive")
    return value.astimezone(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """An aware datetime in, the same instant in UTC out, on every backend.

    SQLite has no time zones, so UTC is stored naive there; its fixed-width text
    form then compares in time order, which the lock's expiry test relies on.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = as_utc(value, "a state time")
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

# One row: the schema version the database is at (see reconcile.state.schema).
schema_version_table = sa.Table(
    f"{TABLE_PREFIX}schema_version",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint("id = 1", name=f"{TABLE_PREFIX}schema_version_one_row"),
)

# Runs and lease locks (reconcile.state.store).

runs_table = sa.Table(
    f"{TABLE_PREFIX}runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("job", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("mode", sa.String(8), nullable=True),
    sa.Column("counts_json", sa.Text(), nullable=True),
    sa.Column("requests_json", sa.Text(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("report_dir", sa.Text(), nullable=True),
    # The run whose listing this run continued (schema version 3): kept here because the
    # listing's own rows go once the run's report is in place.
    sa.Column("resumed_from", sa.String(64), nullable=True),
    sa.Index(f"{TABLE_PREFIX}runs_job_started", "job", "started_at"),
)

locks_table = sa.Table(
    f"{TABLE_PREFIX}locks",
    metadata,
    sa.Column("job", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("acquired_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)

# The audit log of every write (reconcile.state.audit).

audit_table = sa.Table(
    f"{TABLE_PREFIX}audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", UTCDateTime(), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("job", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.String(255), nullable=True),
    sa.Column("user_id", sa.String(255), nullable=True),
    sa.Column("before", sa.Text(), nullable=True),
    sa.Column("after", sa.Text(), nullable=True),
    sa.Column("idempotency_key", sa.String(255), nullable=True),
    sa.Column("stripe_request_id", sa.String(255), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Index(f"{TABLE_PREFIX}audit_run", "run_id"),
)

# A run's request facts and reads (reconcile.state.history, reconcile.state.read_budget).

stats_table = sa.Table(
    f"{TABLE_PREFIX}run_stats",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("rate_limited", sa.Integer(), nullable=False),
    sa.Column("retries", sa.Integer(), nullable=False),
    sa.Column("errors", sa.Integer(), nullable=False),
    sa.Column("duration_seconds", sa.Float(), nullable=True),
)

reads_table = sa.Table(
    f"{TABLE_PREFIX}run_reads",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("job", sa.String(64), nullable=False, index=True),
    # Test-mode reads are not the live account's: the budget counts the mode's own.
    sa.Column("mode", sa.String(8), nullable=False),
    sa.Column("recorded_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("reads", sa.Integer(), nullable=False),
    # Customers the run saw in all; None when it did not scan the whole account.
    sa.Column("customers", sa.Integer(), nullable=True),
)

# Card reminders sent, one row per (mode, card, expiry) (reconcile.state.reminders_sent).

reminders_table = sa.Table(
    f"{TABLE_PREFIX}reminders",
    metadata,
    sa.Column("mode", sa.String(8), primary_key=True),
    sa.Column("payment_method_id", sa.String(255), primary_key=True),
    sa.Column("exp_year", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("exp_month", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.String(255), nullable=False),
    sa.Column("first_sent_at", UTCDateTime(), nullable=False),
    sa.Column("last_sent_at", UTCDateTime(), nullable=False),
    sa.Column("times_sent", sa.Integer, nullable=False),
    sa.Column("last_run_id", sa.String(64), nullable=False),
)

# Resumable listings and their window cursors (reconcile.state.checkpoints); a listing's
# rows go with its work folder once the report is in place.

listings_table = sa.Table(
    f"{TABLE_PREFIX}run_listings",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("job", sa.String(64), nullable=False),
    sa.Column("listing_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_lt", sa.BigInteger(), nullable=False),
    sa.Column("work_dir", sa.Text(), nullable=False),
    sa.Column("resumed_from", sa.String(64), nullable=True),
    # Every fresh listing looks up the job's earlier ones (schema version 2).
    sa.Index(f"{TABLE_PREFIX}run_listings_job", "job"),
)

checkpoints_table = sa.Table(
    f"{TABLE_PREFIX}checkpoints",
    metadata,
    sa.Column("listing_id", sa.String(64), primary_key=True),
    sa.Column("window", sa.Integer(), primary_key=True),
    sa.Column("created_gte", sa.BigInteger(), nullable=True),
    sa.Column("created_lt", sa.BigInteger(), nullable=False),
    sa.Column("last_id", sa.String(255), nullable=True),
    sa.Column("pages", sa.Integer(), nullable=False, default=0),
    sa.Column("rows", sa.Integer(), nullable=False, default=0),
    sa.Column("done", sa.Boolean(), nullable=False, default=False),
    # Epoch seconds: portable across SQLite and PostgreSQL without a time zone type.
    sa.Column("updated_at", sa.Float(), nullable=False),
)

# The shape of each account's last complete listing, to cut the next one where its windows
# end on full pages (reconcile.rules.listing_plan; schema version 4). One row per account
# (a hash of the key) and mode; no personal data: seconds and counts.

listing_profiles_table = sa.Table(
    f"{TABLE_PREFIX}listing_profiles",
    metadata,
    sa.Column("account", sa.String(64), primary_key=True),
    sa.Column("mode", sa.String(8), primary_key=True),
    sa.Column("created_lt", sa.BigInteger(), nullable=False),
    sa.Column("customers", sa.Integer(), nullable=False),
    # JSON: [[second, customers created before it], ...], one per hundredth customer.
    sa.Column("marks", sa.Text(), nullable=False),
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
)
