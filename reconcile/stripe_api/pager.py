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
    "WindowPage",
    "iter_customer_window",
    "iter_customers",
    "iter_window_pages",
    "rejects_created_filter",
]

_log = get_logger(__name__)


def iter_customers(
    gateway: StripeGateway, *, created_lt: int, expand: Sequence[str] = ()
) -> Iterator[dict[str, Any]]:
    """Every customer created before ``created_lt``, newest first, as plain dicts."""
    return iter_customer_window(gateway, None, created_lt, expand=expand)


@dataclass(frozen=True)
class WindowPage:
    """One page of a window: its customers, the JSON text to store (None where the page
    was filtered here and must be written anew), and whether the window ends with it."""

    records: list[dict[str, Any]]
    body: bytes | None
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
) -> Iterator[WindowPage]:
    """The pages of the window ``[created_gte, created_lt)``, newest first; the last one
    has ``last`` set. Each page is fetched only when the caller asks for it."""
    if gateway.created_filter_supported is not False:
        try:
            for page in gateway.customer_pages(
                created_lt=created_lt,
                created_gte=created_gte,
                starting_after=starting_after,
                expand=expand,
            ):
                # An answer, even an empty one, shows the filter is accepted.
                gateway.created_filter_supported = True
                yield WindowPage(page.records, page.body, not page.has_more)
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
    for page in gateway.customer_pages(starting_after=starting_after, expand=expand):
        kept: list[dict[str, Any]] = []
        below = False
        for customer in page.records:
            created = int(customer["created"])
            if created >= created_lt:
                continue
            if created_gte is not None and created < created_gte:
                below = True
                break
            kept.append(customer)
        done = below or not page.has_more
        if kept or done:
            yield WindowPage(kept, None, done)
        if done:
            return


def rejects_created_filter(exc: StripeRequestError) -> bool:
    """A 400 that names the ``created`` parameter (``created``, ``created[lt]``, ...)."""
    if exc.status != 400:
        return False
    if exc.param is not None:
        return exc.param.startswith("created")
    return "created" in exc.message
