"""Paging customers for a consistent snapshot: ``created < created_lt``, fixed at the run's start.

A window ``[created_gte, created_lt)`` pages on its own cursor, so windows can later be
paged concurrently and resumed from their last id. Where the server rejects the
``created`` filter (a 400 naming it), the pager pages without it and filters here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from reconcile.gateway import StripeGateway
from reconcile.logs import get_logger
from reconcile.stripe_errors import StripeRequestError

__all__ = ["iter_customer_window", "iter_customers", "rejects_created_filter"]

_log = get_logger(__name__)


def iter_customers(
    gateway: StripeGateway, *, created_lt: int, expand: Sequence[str] = ()
) -> Iterator[dict[str, Any]]:
    """Every customer created before ``created_lt``, newest first, as plain dicts."""
    return iter_customer_window(gateway, None, created_lt, expand=expand)


def iter_customer_window(
    gateway: StripeGateway,
    created_gte: int | None,
    created_lt: int,
    starting_after: str | None = None,
    *,
    expand: Sequence[str] = (),
) -> Iterator[dict[str, Any]]:
    """Customers with ``created_gte <= created < created_lt``, newest first.

    ``starting_after`` resumes after the last id a previous pass yielded.
    """
    last_id = starting_after
    if gateway.created_filter_supported is not False:
        try:
            for customer in gateway.list_customers(
                created_lt=created_lt,
                created_gte=created_gte,
                starting_after=last_id,
                expand=expand,
            ):
                gateway.created_filter_supported = True
                last_id = customer["id"]
                yield customer
            # An empty window answered without complaint: the filter is accepted too.
            gateway.created_filter_supported = True
            return
        except StripeRequestError as exc:
            if not rejects_created_filter(exc):
                raise
            _log.warning(
                "created_filter_rejected",
                api_base=gateway.api_base,
                detail="paging every customer and filtering by created here instead",
            )
            gateway.created_filter_supported = False
    # The filtered listing is a subsequence of the plain one (both newest first), so the
    # plain listing resumes after the last id without repeating or skipping anyone.
    for customer in gateway.list_customers(starting_after=last_id, expand=expand):
        created = int(customer["created"])
        if created >= created_lt:
            continue
        if created_gte is not None and created < created_gte:
            return
        yield customer


def rejects_created_filter(exc: StripeRequestError) -> bool:
    """A 400 that names the ``created`` parameter (``created``, ``created[lt]``, ...)."""
    if exc.status != 400:
        return False
    if exc.param is not None:
        return exc.param.startswith("created")
    return "created" in exc.message
