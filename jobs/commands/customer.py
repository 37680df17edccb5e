"""`stripe-reconcile customer ...`: one customer at a time, for day-to-day use.

Thin shells over reconcile.stripe_api.customer_ops. Writes are refused in live mode without
--confirm-live (or STRIPE_RECONCILE_CONFIRM_LIVE=1) and land in the audit log: the
`started` row is written before the write is sent (no audit row, no write), and replaced
by the outcome after. Each invocation is its own intent (its run id) for the keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import sqlalchemy as sa

from jobs.apply import CONFIRM_LIVE_ENV, live_confirmed
from jobs.commands.support import ReconcileGroup, config_option, load
from reconcile.errors import EXIT_NOT_FOUND, ConfigError, ReconcileError, StripeNotFoundError
from reconcile.logs import redact_text
from reconcile.mode import Mode
from reconcile.settings import Settings
from reconcile.state.audit import AuditLog, Outcome
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.userdb import safe_url

if TYPE_CHECKING:
    from reconcile.stripe_api.customer_ops import WriteRecord

__all__ = ["customer", "customer_fields"]

F = TypeVar("F", bound=Callable[..., Any])


def customer_fields(customer: Mapping[str, Any], metadata_key: str) -> dict[str, Any]:
    """The few fields shown: ids and what identifies the person (never a key or a card)."""
    if customer.get("deleted"):
        return {"id": customer.get("id"), "deleted": True}
    default = (customer.get("invoice_settings") or {}).get("default_payment_method")
    if isinstance(default, Mapping):
        default = default.get("id")
    return {
        "id": customer.get("id"),
        "email": customer.get("email"),
        "name": customer.get("name"),
        "user_id": (customer.get("metadata") or {}).get(metadata_key),
        "created": customer.get("created"),
        "default_payment_method": default,
        "metadata": dict(customer.get("metadata") or {}),
    }


def _echo(customers: Iterable[Mapping[str, Any]], metadata_key: str, as_json: bool) -> None:
    shown = [customer_fields(c, metadata_key) for c in customers]
    if as_json:
        for fields in shown:
            click.echo(json.dumps(fields, ensure_ascii=False, sort_keys=True))
        return
    for fields in shown:
        plain = {k: v for k, v in fields.items() if k != "metadata"}
        click.echo("\t".join(f"{k}={'' if v is None else v}" for k, v in plain.items()))


def _json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")(func)


def _confirm_option(func: F) -> F:
    return click.option(
        "--confirm-live",
        is_flag=True,
        help=f"Allow this write in live mode (unattended: {CONFIRM_LIVE_ENV}=1).",
    )(func)


@contextmanager
def _not_found_is_exit_8() -> Iterator[None]:
    """A customer or payment method that does not exist is an answer (exit 8), not a
    failure of Stripe or of the key (exit 3)."""
    try:
        yield
    except StripeNotFoundError as exc:
        vars(exc)["exit_code"] = EXIT_NOT_FOUND
        raise


class _Session:
    """Settings, a gateway and (for writes) the audit log of one command."""

    def __init__(self, ctx: click.Context, config_path: Path | None) -> None:
        from jobs.runner import build_gateway

        self.settings: Settings = load(ctx, config_path)
        self.gateway: StripeGateway = build_gateway(self.settings)
        self.run_id = "customer-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        ctx.call_on_close(self.gateway.close)

    @property
    def metadata_key(self) -> str:
        return self.settings.userdb.user_id_metadata_key

    def require_write(self, confirm_live: bool) -> None:
        # The variable is read in every mode, so a malformed value is refused even where
        # --confirm-live (or a test key) would not need it.
        if not live_confirmed({"confirm_live": confirm_live}, os.environ) and (
            self.gateway.mode is Mode.LIVE
        ):
            raise ConfigError(
                f"live mode (key {self.gateway.masked_key}): this write needs --confirm-live "
                f"(or {CONFIRM_LIVE_ENV}=1); nothing was written"
            )

    @contextmanager
    def audited(self, record: WriteRecord) -> Iterator[WriteRecord]:
        """The `started` row before the write (ConfigError, and nothing sent, when it
        cannot be written), the outcome after."""
        from reconcile.state.store import StateStore

        store = StateStore(self.settings.state.url)
        try:
            log = AuditLog(store.engine)
            row = log.begin(
                run_id=self.run_id,
                job="customer",
                action=record.action,
                customer_id=record.customer_id,
                user_id=record.user_id,
                before=record.before,
                idempotency_key=record.idempotency_key,
            )
        except sa.exc.SQLAlchemyError as exc:
            store.close()
            cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise ConfigError(
                f"[state] url {safe_url(self.settings.state.url)}: the audit row cannot be "
                f"written ({cause}); nothing was sent to Stripe: make the state database "
                "writable and run the command again"
            ) from None
        try:
            yield record
        except ReconcileError as exc:
            self._finish(log, row, record, Outcome.FAILED, error=redact_text(exc.message))
            raise
        else:
            self._finish(log, row, record, record.outcome)
        finally:
            store.close()

    def _finish(
        self, log: AuditLog, row: int, record: WriteRecord, outcome: str, error: str | None = None
    ) -> None:
        log.finish(
            row,
            run_id=self.run_id,
            job="customer",
            action=record.action,
            outcome=outcome,
            customer_id=record.customer_id,
            user_id=record.user_id,
            before=record.before,
            after=record.after,
            idempotency_key=record.idempotency_key,
            stripe_request_id=self.gateway.last_request_id(),
            error=error,
        )


@click.group(cls=ReconcileGroup)
def customer() -> None:
    """Find, create, update or delete one customer."""


@customer.command("find")
@config_option
@click.option("--email", default=None, help="Exact email (listing filter, then search).")
@click.option("--user-id", default=None, help="Your user id, in the metadata user id key.")
@_json_option
@click.pass_context
def find(
    ctx: click.Context,
    config_path: Path | None,
    email: str | None,
    user_id: str | None,
    as_json: bool,
) -> None:
    """Show the customers with this email or user id (exit 8 when none)."""
    from reconcile.stripe_api.customer_ops import find_by_email, find_by_user_id

    if (email is None) == (user_id is None):
        raise click.UsageError("give exactly one of --email and --user-id")
    session = _Session(ctx, config_path)
    found = (
        find_by_email(session.gateway, email)
        if email is not None
        else find_by_user_id(session.gateway, str(user_id), session.metadata_key)
    )
    _echo(found, session.metadata_key, as_json)
    if not found:
        # The value is not repeated: an email is personal data, and stderr may be logged.
        given = "--email" if email is not None else f"--user-id (metadata {session.metadata_key})"
        click.echo(f"stripe-reconcile: no customer matches this {given}", err=True)
        ctx.exit(EXIT_NOT_FOUND)


@customer.command("get-or-create")
@config_option
@click.option("--user-id", required=True, help="Your user id (stored in metadata).")
@click.option("--email", required=True, help="The user's email.")
@click.option("--name", default=None, help="The user's name.")
@_confirm_option
@_json_option
@click.pass_context
def get_or_create_command(
    ctx: click.Context,
    config_path: Path | None,
    user_id: str,
    email: str,
    name: str | None,
    confirm_live: bool,
    as_json: bool,
) -> None:
    """Show the user's customer, creating it (once) when there is none."""
    from reconcile.stripe_api.customer_ops import get_or_create

    session = _Session(ctx, config_path)
    session.require_write(confirm_live)
    result = get_or_create(
        session.gateway,
        user_id,
        email,
        name,
        intent=session.run_id,
        audit=session.audited,
        metadata_key=session.metadata_key,
        scope=session.settings.userdb.scope,
    )
    _echo([result.customer], session.metadata_key, as_json)


@customer.command("update-metadata")
@config_option
@click.argument("customer_id")
@click.argument("pairs", nargs=-1)
@_confirm_option
@_json_option
@click.pass_context
def update_metadata_command(
    ctx: click.Context,
    config_path: Path | None,
    customer_id: str,
    pairs: tuple[str, ...],
    confirm_live: bool,
    as_json: bool,
) -> None:
    """Set metadata keys (key=value; key= deletes), checked against Stripe's limits."""
    from reconcile.stripe_api.customer_ops import parse_metadata_pairs, update_metadata

    changes = parse_metadata_pairs(pairs)
    session = _Session(ctx, config_path)
    session.require_write(confirm_live)
    with _not_found_is_exit_8():
        updated, _key = update_metadata(
            session.gateway, customer_id, changes, intent=session.run_id, audit=session.audited
        )
    _echo([updated], session.metadata_key, as_json)


@customer.command("attach-pm")
@config_option
@click.argument("customer_id")
@click.argument("payment_method_id")
@click.option("--default", "make_default", is_flag=True, help="Also make it the default.")
@_confirm_option
@_json_option
@click.pass_context
def attach_pm(
    ctx: click.Context,
    config_path: Path | None,
    customer_id: str,
    payment_method_id: str,
    make_default: bool,
    confirm_live: bool,
    as_json: bool,
) -> None:
    """Attach a payment method to the customer, optionally as its default."""
    from reconcile.stripe_api.customer_ops import attach_payment_method

    session = _Session(ctx, config_path)
    session.require_write(confirm_live)
    with _not_found_is_exit_8():
        updated = attach_payment_method(
            session.gateway,
            customer_id,
            payment_method_id,
            intent=session.run_id,
            audit=session.audited,
            default=make_default,
        )
    _echo([updated], session.metadata_key, as_json)


@customer.command("delete")
@config_option
@click.argument("customer_id")
@_confirm_option
@click.pass_context
def delete(
    ctx: click.Context, config_path: Path | None, customer_id: str, confirm_live: bool
) -> None:
    """Delete the customer in Stripe (this cannot be undone)."""
    from reconcile.stripe_api.customer_ops import delete_customer

    session = _Session(ctx, config_path)
    session.require_write(confirm_live)
    with _not_found_is_exit_8():
        deletion = delete_customer(
            session.gateway, customer_id, intent=session.run_id, audit=session.audited
        )
    if deletion.deleted_now:
        click.echo(f"deleted {customer_id}")
    else:
        click.echo(f"{customer_id} was already deleted; nothing to do")
