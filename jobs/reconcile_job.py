"""The reconcile job: list every customer, read every user, report every disagreement.

Option `incremental` (`--incremental`/`--full`, `[incremental] enabled`): the customers
from the mirror brought up to date by Stripe's events instead of a listing (jobs.incremental).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from jobs.base import Job, JobContext, JobResult
from jobs.listing_run import (
    full_listing_certain,
    listing_run,
    start_listing,
    users_and_plan,
)
from jobs.per_customer import scan_customers, scan_workers
from reconcile.errors import ConfigError, StripeNotFoundError
from reconcile.job_options import ReconcileOptions
from reconcile.listing.resume import walk_customers_frame
from reconcile.logs import get_logger
from reconcile.mode import Mode
from reconcile.settings import UserDBSettings

# pandas, Arrow and the mirror come in while the listing's first pages are on their way
# (tests/startup): the listing does not need them to send its first request.
if TYPE_CHECKING:
    import pandas as pd

    from reconcile.listing.checkpoints import ListingRecord
    from reconcile.rules.compare import CompareConfig

__all__ = [
    "JOB",
    "WRONG_MODE_SAMPLE",
    "classify_missing",
    "compare_config",
    "metadata_keys_needed",
    "wrong_mode_possible",
    "wrong_mode_suspected",
]

log = get_logger(__name__)

JOB_NAME = "reconcile"
MissingCause = Literal["deleted", "other_mode", "absent"]
MISSING_CAUSES: tuple[str, ...] = get_args(MissingCause)
# Missing ids looked up before deciding that the key, not the data, is of the wrong mode.
WRONG_MODE_SAMPLE = 10


def compare_config(settings: UserDBSettings, key_mode: Mode | None = None) -> CompareConfig:
    from reconcile.rules.compare import CompareConfig

    return CompareConfig(
        user_id_metadata_key=settings.user_id_metadata_key,
        metadata_keys=settings.metadata_keys,
        compare_email=True,
        compare_name=settings.name_column is not None,
        scope=dict(settings.scope),
        key_mode=None if key_mode is None else key_mode.value,
    )


def metadata_keys_needed(settings: UserDBSettings) -> list[str]:
    keys = [settings.user_id_metadata_key, *settings.metadata_keys, *settings.scope]
    return list(dict.fromkeys(keys))


def wrong_mode_possible(linked_users: int, missing: int) -> bool:
    """Whether so many linked users' customers are missing that the key may be of the wrong
    mode (what a sample of look-ups then decides: `wrong_mode_suspected`)."""
    return linked_users > 0 and missing * 2 > linked_users


def wrong_mode_suspected(linked_users: int, missing: int, sampled: int, other_mode: int) -> bool:
    """Most linked users' customers are missing and most of a sample of them exist in the
    other mode: the key is of the wrong mode, not the data. (Deleted and mistyped ids make
    up the rest of the sample: they are missing in both modes.)"""
    return (
        wrong_mode_possible(linked_users, missing)
        and sampled == min(missing, WRONG_MODE_SAMPLE)
        and other_mode * 5 >= sampled * 4
    )


def classify_missing(
    ctx: JobContext, customer_ids: Iterable[str], *, linked_users: int = 0
) -> tuple[dict[str, MissingCause], list[dict[str, Any]]]:
    """Retrieve each missing id once: deleted, of the other mode, absent — or created meanwhile.

    A customer created after the listing's fixed upper bound is not missing; it is
    returned so the caller can add it to the snapshot. When most linked users' customers
    exist in the other mode, the run stops with a ConfigError after a small sample
    rather than report every user as missing.
    """
    causes: dict[str, MissingCause] = {}
    late: list[dict[str, Any]] = []
    ids = list(customer_ids)

    def look_up(customer_id: str) -> tuple[MissingCause | None, dict[str, Any] | None]:
        try:
            found = ctx.gateway.retrieve_customer(customer_id)
        except StripeNotFoundError as exc:
            return ("other_mode" if exc.other_mode else "absent"), None
        return ("deleted", None) if found.get("deleted") else (None, found)

    def record(customer_id: str, answer: tuple[MissingCause | None, dict[str, Any] | None]) -> None:
        cause, found = answer
        if cause is not None:
            causes[customer_id] = cause
        elif found is not None:
            late.append(found)

    workers = scan_workers(ctx.gateway.limiter)
    # The sample first (its calls at once), judged in order, so a key of the wrong mode
    # stops the run after a few calls instead of one per missing id. Few missing ids
    # cannot make the key suspect: then no call waits for the sample's slowest answer.
    sample = ids[:WRONG_MODE_SAMPLE] if wrong_mode_possible(linked_users, len(ids)) else []
    answers = scan_customers(sample, look_up, workers=workers, description="looking up customers")
    for number, (customer_id, answer) in enumerate(zip(sample, answers, strict=True), start=1):
        record(customer_id, answer)
        other_mode = sum(cause == "other_mode" for cause in causes.values())
        if wrong_mode_suspected(linked_users, len(ids), number, other_mode):
            raise ConfigError(
                f"{len(ids)} of {linked_users} linked users' customer ids are missing in "
                f"{ctx.gateway.mode.value} mode and most of those looked up exist in "
                f"{ctx.gateway.mode.other.value} mode: the key {ctx.gateway.masked_key} is of "
                f"the wrong mode; set STRIPE_SECRET_KEY to a {ctx.gateway.mode.other.value}-mode "
                "key"
            )
    # The rest concurrently, under the limiter (results in the order of the ids).
    rest = ids[len(sample) :]
    answers = scan_customers(
        rest, look_up, workers=workers, description="looking up missing customers"
    )
    for customer_id, answer in zip(rest, answers, strict=True):
        record(customer_id, answer)
    return causes, late


Listed = tuple["pd.DataFrame", "ListingRecord"]
Classified = tuple[dict[str, MissingCause], list[dict[str, Any]]]


def _classify_in_background(
    ctx: JobContext, customer_ids: list[str], *, linked_users: int
) -> Future[Classified]:
    """`classify_missing` in a thread of its own from now, timed as "missing_lookups", in
    this context (run id, job)."""

    def lookups() -> Classified:
        with ctx.phase("missing_lookups"):
            return classify_missing(ctx, customer_ids, linked_users=linked_users)

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="missing-lookups")
    future = executor.submit(contextvars.copy_context().run, lookups)
    executor.shutdown(wait=False)
    return future


def run(ctx: JobContext) -> JobResult:
    settings = ctx.settings.userdb
    keys = metadata_keys_needed(settings)
    # A plain full listing starts first: its pages arrive while pandas is imported and the
    # users are read. (Otherwise the mirror decides, which needs them first.)
    sent = ctx.gateway.stats.total
    early: Future[Listed] | None = None
    if full_listing_certain(ctx):
        early = start_listing(ctx, JOB_NAME, lambda listed: walk_customers_frame(listed, keys))
    users, plan = users_and_plan(ctx, JOB_NAME, keys, early, sent)
    from jobs.incremental import (
        keep_full_listing,
        known_missing,
        reflected_events,
        remember_missing,
        update_mirror,
    )

    created_lt: int | None = None
    resumed_from: str | None = None
    if plan.choice.listing == "incremental":
        # The mirror brought up to date from Stripe's events (jobs.incremental).
        customers = update_mirror(ctx, plan)
    else:
        if early is None and plan.choice.keep_mirror:
            plan.reflected = reflected_events(ctx, int(ctx.started_at.timestamp()))
        # Stored page by page and checkpointed, so a killed run resumes
        # (reconcile.listing.resume).
        # Built from the stored pages by Arrow: no dict per customer is ever held.
        if early is not None:
            customers, listing = early.result()
        else:
            customers, listing = walk_customers_frame(listing_run(ctx, JOB_NAME), keys)
        created_lt = listing.created_lt
        resumed_from = listing.resumed_from
        if resumed_from is not None:
            # Part of the pages were read by the failed run, before these events.
            plan.reflected = ()
        keep_full_listing(ctx, plan, customers, bound=created_lt)
    if len(customers):
        ctx.gateway.confirm_mode({"livemode": bool(customers["livemode"].iloc[0])})
    log.info("customers listed", customers=len(customers), created_lt=created_lt)

    import pandas as pd

    from reconcile.rules.compare import Comparison, missing_customer_ids
    from reconcile.rules.snapshots import customers_frame
    from reports.writer import load_report_writing

    missing = missing_customer_ids(customers, users)
    # An incremental run looks up only ids no earlier run classified: a deleted, absent
    # or other-mode id stays so (Stripe never reuses an id).
    known = known_missing(plan) if plan.choice.listing == "incremental" else {}
    lookups = _classify_in_background(
        ctx,
        [customer_id for customer_id in missing if customer_id not in known],
        linked_users=int(users["customer_id"].notna().sum()),
    )
    config = compare_config(settings, ctx.gateway.mode)
    try:
        # Every rule but missing_customer, and what the reports need, while the look-ups
        # wait on Stripe.
        with ctx.phase("compare"):
            comparison = Comparison(customers, users, config)
        load_report_writing()
    finally:
        # The look-ups are part of the run: they end before it does, failed or not.
        lookups.exception()
    causes, late = lookups.result()
    looked_up = len(causes) + len(late)
    for customer_id in missing:
        cause = known.get(customer_id)
        if cause in MISSING_CAUSES and customer_id not in causes:
            causes[customer_id] = cast(MissingCause, cause)
    remember_missing(plan, causes)
    with ctx.phase("compare"):
        if late:
            # Customers created since the listing's bound take part in every rule.
            customers = pd.concat([customers, customers_frame(late, keys)], ignore_index=True)
            comparison = Comparison(customers, users, config)
        findings = comparison.findings(causes)
    return JobResult(
        findings=findings,
        facts={
            "customers_scanned": len(customers),
            "users_scanned": len(users),
            "snapshot_created_lt": created_lt,
            "resumed_from": resumed_from,
            "missing_customer_lookups": looked_up,
            **plan.facts,
        },
    )


JOB = Job(
    name=JOB_NAME,
    description=(
        "Compare every Stripe customer with the user database: duplicates, orphans on both "
        "sides, stale metadata, customers of deleted users."
    ),
    run=run,
    options_model=ReconcileOptions,
)
