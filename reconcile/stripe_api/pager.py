"""Paging customers for a consistent snapshot: ``created < created_lt``, fixed at the run's start.

A window ``[created_gte, created_lt)`` pages on its own cursor, so windows can later be
paged concurrently and resumed from their last id. Where the server rejects the
``created`` filter (a 400 naming it), the pager pages without it and filters here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from reconcile.logs import get_logger
from reconcile.stripe_api.errors import StripeRequestError
from reconcile.stripe_api.gateway import StripeGateway

__all__ = [
    "PAGE_SIZE",
    "WindowPage",
    "iter_customer_window",
    "iter_customers",
    "iter_window_pages",
    "rejects_created_filter",
]

_log = get_logger(__name__)

# Customers per request: Stripe's largest `limit`.
PAGE_SIZE = 100


def iter_customers(
    gateway: StripeGateway, *, created_lt: int, expand: Sequence[str] = ()
) -> Iterator[dict[str, Any]]:
    """Every customer created before ``created_lt``, newest first, as plain dicts."""
    return iter_customer_window(gateway, None, created_lt, expand=expand)


@dataclass(frozen=True)
class WindowPage:
    """A page-worth of a window's customers (at most a page's `limit`), and whether the
    window ends with it. The last one may be empty (the window ended on a full page)."""

    records: list[dict[str, Any]]
    last: bool


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
    for page in iter_window_pages(gateway, created_gte, created_lt, starting_after, expand=expand):
        yield from page.records


def iter_window_pages(
    gateway: StripeGateway,
    created_gte: int | None,
    created_lt: int,
    starting_after: str | None = None,
    *,
    expand: Sequence[str] = (),
    page_size: int = PAGE_SIZE,
) -> Iterator[WindowPage]:
    """The customers of the window ``[created_gte, created_lt)``, newest first, a page-worth
    at a time, from the SDK's `auto_paging_iter` (`StripeGateway.customers_list`); the last
    one has ``last`` set.

    A page-worth is yielded as soon as it is complete, before the next page is asked for:
    a caller that stores it and records its last id as the cursor has a checkpoint from
    which ``starting_after`` continues exactly, and a caller that stops there (or narrows
    the window) sends nothing more.
    """
    if gateway.created_filter_supported is not False:
        try:
            items = gateway.customers_list(
                created_lt=created_lt,
                created_gte=created_gte,
                starting_after=starting_after,
                expand=expand,
                page_size=page_size,
            )
            yield from _page_worths(gateway, items, page_size)
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
    plain = gateway.customers_list(
        starting_after=starting_after, expand=expand, page_size=page_size
    )
    kept: list[dict[str, Any]] = []
    for customer in plain:
        created = int(customer["created"])
        if created >= created_lt:
            continue
        if created_gte is not None and created < created_gte:
            break
        kept.append(customer)
        if len(kept) == page_size:
            yield WindowPage(kept, False)
            kept = []
    yield WindowPage(kept, True)


def _page_worths(
    gateway: StripeGateway, items: Iterator[dict[str, Any]], page_size: int
) -> Iterator[WindowPage]:
    batch: list[dict[str, Any]] = []
    for customer in items:
        # An answer, even an empty one, shows the filter is accepted.
        gateway.created_filter_supported = True
        batch.append(customer)
        if len(batch) == page_size:
            yield WindowPage(batch, False)
            batch = []
    gateway.created_filter_supported = True
    yield WindowPage(batch, True)


def rejects_created_filter(exc: StripeRequestError) -> bool:
    """A 400 that names the ``created`` parameter (``created``, ``created[lt]``, ...)."""
    if exc.status != 400:
        return False
    if exc.param is not None:
        return exc.param.startswith("created")
    return "created" in exc.message
