"""The card-expiry job: expiring and expired cards, and the reminders that keep billing going.

Default scope: the customer listing with each default payment method expanded inline,
one request per 100 customers. `--all-cards` (option `all_cards`): every card of every
customer, one `GET /v1/customers/{id}/payment_methods` each, started as the listing's
pages arrive (jobs.per_customer), so both endpoints' budgets are used at once under the
shared limiter. Customers outside `[userdb] scope` (unless a user links to them) are
left out, as in reconcile. The listing is the resumable one (reconcile.listing.resume).
A customer deleted between the listing (or a resumed run's stored pages) and its
payment-method call is left out too and counted (`customers_deleted_during_run`), never
a failed run. Default cards with a full listing certain (no mirror): the listing starts
in a thread of its own before the users are read, as in reconcile (jobs.listing_run).

Options: `days` (window, default `[card_expiry] days`), `all_cards`, `send`,
`confirm_live`, `incremental` (default cards from the customer mirror brought up to date
by Stripe's events instead of a listing: jobs.incremental; never with `all_cards`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from jobs.base import Job, JobContext, JobResult
from jobs.listing_run import (
    full_listing_certain,
    listing_run,
    start_listing,
    users_and_plan,
)
from jobs.per_customer import (
    DeletedMeanwhile,
    OverlappedScan,
    scan_workers,
    unless_deleted,
)
from jobs.reconcile_job import compare_config, metadata_keys_needed
from jobs.reminders import load_templates, send_reminders, without_soft_deleted
from reconcile.errors import ConfigError
from reconcile.job_options import CardExpiryOptions
from reconcile.listing.resume import walk_customers
from reconcile.logs import get_logger
from reconcile.mode import Mode
from reconcile.stripe_api.gateway import StripeGateway

# pandas, the card rules, the mirror and the reminder memory come in while the listing's
# first pages are on their way (tests/startup): the listing does not need them.
if TYPE_CHECKING:
    import pandas as pd

    from reconcile.listing.checkpoints import ListingRecord

__all__ = [
    "CONFIRM_LIVE_ENV",
    "DEFAULT_CARD_EXPANDS",
    "JOB",
    "ListedDefaults",
    "cards_of_customer",
    "cards_unless_deleted",
    "default_cards",
    "live_send_confirmed",
    "split_deleted",
]

log = get_logger(__name__)

Walked = tuple[list[dict[str, Any]], "ListingRecord"]

CONFIRM_LIVE_ENV = "STRIPE_RECONCILE_CONFIRM_LIVE"
JOB_NAME = "card-expiry"
DEFAULT_CARD_EXPANDS = ("invoice_settings.default_payment_method", "default_source")


def live_send_confirmed(options: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    # The same rule as writes (jobs.apply): one parser of STRIPE_RECONCILE_CONFIRM_LIVE.
    from jobs.apply import live_confirmed

    return live_confirmed(options, env)


def _default_of(record: Mapping[str, Any]) -> tuple[str | None, Any]:
    """(id, object or None) of what invoices charge: the default payment method, else source."""
    settings = record.get("invoice_settings")
    pm = settings.get("default_payment_method") if isinstance(settings, Mapping) else None
    if pm is None:
        pm = record.get("default_payment_method")  # the seed generator's flat records
    if pm is None:
        pm = record.get("default_source")
    if isinstance(pm, Mapping):
        return (str(pm["id"]) if pm.get("id") else None), pm
    return (str(pm) if pm else None), None


_CARD_FIELDS = ("brand", "last4", "exp_month", "exp_year", "fingerprint")
_CUSTOMER_FIELDS = ("id", "object", "created", "email", "name", "metadata", "livemode")


def _trimmed_payment_object(obj: Any) -> Any:
    """What the card rules read of an expanded payment method or legacy source."""
    if not isinstance(obj, Mapping):
        return obj
    kept = {key: obj.get(key) for key in ("id", "object", "type")}
    if obj.get("object") == "payment_method":
        card = obj.get("card")
        kept["card"] = (
            {key: card.get(key) for key in _CARD_FIELDS} if isinstance(card, Mapping) else card
        )
    else:
        kept.update({key: obj.get(key) for key in _CARD_FIELDS})
    return kept


def trimmed_customer(record: dict[str, Any]) -> dict[str, Any]:
    """A listed customer with only what this job reads: its expanded payment method
    alone is some thirty objects, a million of them gigabytes held for the whole run."""
    kept = {key: record[key] for key in _CUSTOMER_FIELDS if key in record}
    settings = record.get("invoice_settings")
    if isinstance(settings, Mapping):
        kept["invoice_settings"] = {
            "default_payment_method": _trimmed_payment_object(
                settings.get("default_payment_method")
            )
        }
    for key in ("default_payment_method", "default_source"):
        if key in record:
            kept[key] = _trimmed_payment_object(record[key])
    return kept


def mirror_frame(records: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> pd.DataFrame:
    """The customer mirror's rows of listed (trimmed) customers: the snapshot's columns,
    the legacy default source's id and the default's facts as JSON (jobs.incremental)."""
    import pandas as pd

    from jobs.incremental import DEFAULT_FACTS, default_facts_json
    from jobs.incremental import SOURCE as SOURCE_COLUMN
    from reconcile.rules.snapshots import customers_frame

    frame = customers_frame(list(records), keys)
    frame[SOURCE_COLUMN] = pd.array(
        [_source_id(record.get("default_source")) for record in records], dtype="string"
    )
    frame[DEFAULT_FACTS] = pd.array(
        [default_facts_json(_default_of, record) for record in records], dtype="string"
    )
    return frame


def _source_id(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return str(value["id"]) if value.get("id") else None
    return str(value) if value else None


def records_from_mirror(frame: pd.DataFrame, keys: Sequence[str]) -> list[dict[str, Any]]:
    """The mirror's rows as the trimmed customers a listing gives (what this job reads)."""
    from jobs.incremental import DEFAULT_FACTS
    from jobs.incremental import SOURCE as SOURCE_COLUMN
    from reconcile.rules.snapshots import meta_column

    def text(name: str) -> list[Any]:
        column = frame[name]
        return column.astype(object).where(column.notna(), None).tolist()

    meta_lists = [(key, text(meta_column(key))) for key in keys]

    ids, emails, names = text("customer_id"), text("email"), text("name")
    methods, sources, facts = (
        text("default_payment_method"),
        text(SOURCE_COLUMN),
        text(DEFAULT_FACTS),
    )
    created = frame["created"].tolist()
    livemode = frame["livemode"].tolist()
    records: list[dict[str, Any]] = []
    for number, customer_id in enumerate(ids):
        found = json.loads(facts[number]) if facts[number] else None
        method, source = methods[number], sources[number]
        metadata = {key: values[number] for key, values in meta_lists if values[number] is not None}
        record: dict[str, Any] = {
            "id": customer_id,
            "object": "customer",
            "created": int(created[number]),
            "email": emails[number],
            "name": names[number],
            "metadata": metadata,
            "livemode": bool(livemode[number]),
            "invoice_settings": {
                "default_payment_method": (
                    found if method and found and found.get("id") == method else method
                )
            },
        }
        if source:
            record["default_source"] = (
                found if not method and found and found.get("id") == source else source
            )
        records.append(record)
    return records


def _default_card(record: Mapping[str, Any]) -> dict[str, Any] | None:
    from reconcile.rules.card_rows import card_from_object

    _, obj = _default_of(record)
    return None if obj is None else card_from_object(obj, str(record["id"]), is_default=True)


class ListedDefaults:
    """The listing's `keep` hook for default cards: trims each customer (`trimmed_customer`)
    and builds its default card's row as its page arrives, in the listing's workers, so
    the rows are ready when the listing ends instead of being built after it."""

    def __init__(self) -> None:
        # By customer id: the trimmed record the row was built from, and the row.
        self.built: dict[str, tuple[Mapping[str, Any], dict[str, Any] | None]] = {}

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        kept = trimmed_customer(record)
        self.built[str(kept["id"])] = (kept, _default_card(kept))
        return kept


def default_cards(
    records: Iterable[Mapping[str, Any]], listed: ListedDefaults | None = None
) -> list[dict[str, Any]]:
    """The default card of each customer, from the listing's expanded objects; a row
    `listed` built from the very same record is taken as built."""
    built = listed.built if listed is not None else {}
    rows = []
    for record in records:
        found = built.get(str(record["id"]))
        # The same object, not an equal id: a customer listed twice (a page fetched
        # again) keeps the row of the record the listing kept.
        row = found[1] if found is not None and found[0] is record else _default_card(record)
        if row is not None:
            rows.append(row)
    return rows


def cards_of_customer(gateway: StripeGateway, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every card of one customer; the legacy default source added when not listed."""
    from reconcile.rules.cards import card_from_object

    customer_id = str(record["id"])
    default_id, default_obj = _default_of(record)
    rows = []
    for pm in gateway.list_payment_methods(customer_id, type="card"):
        row = card_from_object(pm, customer_id, is_default=pm.get("id") == default_id)
        if row is not None:
            rows.append(row)
    listed = {row["payment_method_id"] for row in rows}
    if default_obj is not None and default_id not in listed:
        row = card_from_object(default_obj, customer_id, is_default=True)
        if row is not None:
            rows.append(row)
    return rows


def cards_unless_deleted(
    gateway: StripeGateway, record: Mapping[str, Any]
) -> list[dict[str, Any]] | DeletedMeanwhile:
    """`cards_of_customer`, or `DeletedMeanwhile` for a customer deleted since the listing."""
    return unless_deleted(gateway, str(record["id"]), lambda: cards_of_customer(gateway, record))


def split_deleted(
    per_customer: Iterable[list[dict[str, Any]] | DeletedMeanwhile],
) -> tuple[list[dict[str, Any]], set[str]]:
    """The card rows of the customers still there, and the ids of those deleted meanwhile."""
    rows: list[dict[str, Any]] = []
    deleted: set[str] = set()
    for found in per_customer:
        if isinstance(found, DeletedMeanwhile):
            deleted.add(found.customer_id)
        else:
            rows.extend(found)
    return rows, deleted


def _check_send(ctx: JobContext) -> str | None:
    """Refuse a live send without confirmation before anything is read; the SMTP password."""
    if not ctx.options.get("send"):
        return None
    if ctx.gateway.mode is Mode.LIVE and not live_send_confirmed(ctx.options, os.environ):
        raise ConfigError(
            "--send in live mode emails real customers: add --confirm-live (or set "
            f"{CONFIRM_LIVE_ENV}=1); nothing was sent"
        )
    from reports.email import smtp_password

    return smtp_password(ctx.settings.email, os.environ)


def run(ctx: JobContext) -> JobResult:
    settings = ctx.settings
    wanted_days = ctx.options.get("days")
    days = settings.card_expiry.days if wanted_days is None else int(wanted_days)
    all_cards = bool(ctx.options.get("all_cards"))
    send = bool(ctx.options.get("send"))
    preview = bool(ctx.options.get("preview"))
    # Refused before anything is read: a live send unconfirmed, a template that does not render.
    password = _check_send(ctx)
    templates = load_templates(settings.card_expiry)
    keys = metadata_keys_needed(settings.userdb)

    # A plain full listing of default cards starts first: its pages arrive while pandas is
    # imported and the users are read. (--all-cards judges each page against the users as
    # it arrives, and otherwise the mirror decides: both need the users first.)
    sent = ctx.gateway.stats.total
    early: Future[Walked] | None = None
    # Default cards: each row built as its customer's page arrives.
    listed_defaults = None if all_cards else ListedDefaults()
    keep = trimmed_customer if listed_defaults is None else listed_defaults
    if listed_defaults is not None and full_listing_certain(ctx):
        early = start_listing(
            ctx,
            JOB_NAME,
            lambda listed: walk_customers(listed, expand=DEFAULT_CARD_EXPANDS, keep=keep),
        )
    users, plan = users_and_plan(ctx, JOB_NAME, keys, early, sent, all_cards=all_cards)

    import pandas as pd

    from jobs.incremental import (
        keep_full_listing,
        mirror_customers,
        mirror_default_cards,
        reflected_events,
        update_mirror,
    )
    from jobs.reminders import (
        due_reminders,
        preview_table,
        reminder_email_count,
        reminder_messages,
    )
    from reconcile.rules.cards import (
        REMINDER_COLUMNS,
        card_findings,
        cards_frame,
        customer_people,
        reminder_candidates,
    )
    from reconcile.rules.compare import in_scope
    from reconcile.rules.snapshots import customers_frame
    from reconcile.state.reminders_sent import ReminderMemory

    config = compare_config(settings.userdb, ctx.gateway.mode)

    def scoped(page: Sequence[Mapping[str, Any]]) -> Sequence[bool]:
        # Scope depends on a customer's own metadata and on the users only, so a page
        # can be judged on its own, as it arrives.
        return list(in_scope(customers_frame(page, keys), users, config).to_numpy())

    scan: OverlappedScan[list[dict[str, Any]] | DeletedMeanwhile] | None = None
    deleted_meanwhile: set[str] = set()
    if all_cards:
        # Payment-method calls start as customer pages arrive, on their own endpoint's budget.
        scan = OverlappedScan(
            lambda record: cards_unless_deleted(ctx.gateway, record),
            scoped,
            workers=scan_workers(ctx.gateway.limiter),
            description="listing payment methods",
        )
    mirror_cards: pd.DataFrame | None = None
    try:
        if plan.choice.listing == "incremental":
            # The mirror brought up to date from Stripe's events (jobs.incremental).
            mirrored = update_mirror(ctx, plan, default_of=_default_of, expand=DEFAULT_CARD_EXPANDS)
            # Read as columns in the snapshot: no customer record is rebuilt.
            records: list[dict[str, Any]] = []
        else:
            if plan.choice.keep_mirror:
                plan.reflected = reflected_events(ctx, int(ctx.started_at.timestamp()))
            if early is not None:
                # What the reports need, loaded while the pages arrive, not after the last.
                from reports.writer import load_report_writing

                load_report_writing()
                records, listing = early.result()
            else:
                records, listing = walk_customers(
                    listing_run(ctx, JOB_NAME),
                    expand=DEFAULT_CARD_EXPANDS,
                    on_page=scan.submit_page if scan is not None else None,
                    keep=keep,
                )
            if listing.resumed_from is not None:
                plan.reflected = ()  # part of the pages are older than these events
            mirrored = mirror_frame(records, keys) if plan.choice.keep_mirror else pd.DataFrame()
            keep_full_listing(ctx, plan, mirrored, bound=listing.created_lt)
        if records:
            ctx.gateway.confirm_mode(records[0])
        with ctx.phase("snapshot"):
            from_mirror = plan.choice.listing == "incremental"
            if from_mirror:
                customers = mirror_customers(mirrored)
            else:
                customers = customers_frame(records, keys)
            kept = in_scope(customers, users, config).to_numpy()
            if from_mirror:
                # The default cards of the customers in scope, read as columns.
                mirror_cards = mirror_default_cards(mirrored[kept])
            customers = customers[kept].reset_index(drop=True)
            if mirror_cards is None:
                records = [record for record, keep in zip(records, kept, strict=True) if keep]
        log.info("customers listed", customers=len(customers), all_cards=all_cards)
        if scan is not None:
            with ctx.phase("payment_methods_after_listing"):
                rows, deleted_meanwhile = split_deleted(scan.finish(records))
            if deleted_meanwhile:
                # Deleted since the listing: no cards left to remind of, so out of the run,
                # counted in the summary instead of failing it.
                gone = customers["customer_id"].isin(deleted_meanwhile).to_numpy()
                customers = customers[~gone].reset_index(drop=True)
                log.info("customers deleted during the run", customers=len(deleted_meanwhile))
        else:
            rows = default_cards(records, listed_defaults) if mirror_cards is None else []
    finally:
        if scan is not None:
            scan.close()
    with ctx.phase("cards"):
        cards = cards_frame(rows) if mirror_cards is None else mirror_cards
        people = customer_people(customers, users, settings.userdb.user_id_metadata_key)
        findings = card_findings(
            cards, customers, people, ctx.today, days=days, all_cards=all_cards
        )

    with ctx.phase("reminders"):
        candidates = reminder_candidates(cards, people, ctx.today, days)
        # A soft-deleted user's customer hears nothing (GDPR deletion pending).
        candidates, soft_deleted = without_soft_deleted(candidates, users)
        memory = ReminderMemory(ctx.state.engine, ctx.gateway.mode.value)
        history = memory.history(candidates["payment_method_id"].dropna().unique().tolist())
        due = due_reminders(
            candidates, history, ctx.started_at, settings.card_expiry.remind_again_after_days
        )
        # A dry run only counts the messages (one rendered, to try the template on real data).
        rendered = send or preview
        messages = reminder_messages(due, templates, settings.email.sender) if rendered else []
        emails_due = len(messages) if rendered else reminder_email_count(due, templates)
    facts: dict[str, Any] = {
        "customers_scanned": len(customers),
        "customers_deleted_during_run": len(deleted_meanwhile),
        "cards_scanned": len(cards),
        "scope": "all cards" if all_cards else "default cards",
        "window_days": days,
        "reminders_due": len(due),
        "reminder_emails_due": emails_due,
        "reminders_already_sent": len(candidates) - len(due),
        "reminder_customers_soft_deleted": soft_deleted,
        **plan.facts,
    }
    failed = 0
    if send and messages:
        outcome = send_reminders(
            messages,
            settings.email,
            password,
            memory,
            run_id=ctx.run_id,
            # The run's own clock: a run's reminders all carry its start time.
            now=lambda: ctx.started_at,
            # A reminder is a write: none goes out once another run holds the lease.
            before_each=ctx.check_lease,
        )
        failed = outcome.failed
        facts["reminders"] = (
            f"sent {outcome.messages_sent} email(s) for {outcome.cards_reminded} card(s)"
        )
        if outcome.failed:
            facts["reminders"] += f", {outcome.failed} failed: {outcome.first_error}"
    elif send:
        facts["reminders"] = "sent 0: none due"
    else:
        facts["reminders"] = (
            f"would send {emails_due} email(s) for {len(due)} card(s); add --send to send"
        )
    tables = {"reminders": due[list(REMINDER_COLUMNS)].reset_index(drop=True)}
    if preview:
        # The rendered messages, for a person to read before the first --send.
        tables["reminders-preview"] = preview_table(messages)
        facts["reminders"] += " (preview: reminders-preview.csv)"
    return JobResult(
        findings=findings,
        facts=facts,
        extra_tables=tables,
        failed_actions=failed,
    )


JOB = Job(
    name=JOB_NAME,
    description=(
        "Expiring and expired cards (default cards, or every card with --all-cards), "
        "cards without a default, duplicate cards; reminder emails with --send."
    ),
    run=run,
    options_model=CardExpiryOptions,
)
