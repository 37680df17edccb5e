"""Per-customer Stripe calls on a thread pool, under the shared limiter, with a progress bar.

`scan_customers` runs one call per customer id once the ids are known.
`OverlappedScan` starts the calls while the customer listing is still going: the listing
hands it each page (`submit_page`, the listing's `on_page`), and `finish` adds what the
listing read back from a resumed run, waits, and returns the results in the order of
the final customer list. The calls are on another endpoint than the listing, so they use
that endpoint's budget while the listing uses its own, both under the one global limit.

A customer deleted after it was listed answers its call with 404: wrapped in
`unless_deleted`, that call returns `DeletedMeanwhile` instead of failing the scan, and
the caller reports the customer as deleted during the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from reconcile.errors import StripeNotFoundError
from reconcile.listing.walk import workers_for
from reconcile.progress import Advance, progress
from reconcile.stripe_api.limiter import RequestLimiter

if TYPE_CHECKING:
    from reconcile.stripe_api.gateway import StripeGateway

__all__ = [
    "DeletedMeanwhile",
    "OverlappedScan",
    "scan_customers",
    "scan_workers",
    "unless_deleted",
]

T = TypeVar("T")
Record = Mapping[str, Any]


@dataclass(frozen=True)
class DeletedMeanwhile:
    """What a per-customer call gives for a customer deleted since it was listed."""

    customer_id: str


def unless_deleted(
    gateway: StripeGateway, customer_id: str, call: Callable[[], T]
) -> T | DeletedMeanwhile:
    """`call()`, or `DeletedMeanwhile` when it fails with 404 because the customer is gone.

    A 404 may name something other than the customer (a paging cursor, say), so the
    customer is retrieved to tell: deleted (`deleted: true`) or missing, it is gone;
    otherwise the 404 stands. A 404 pointing at the other mode is a key of the wrong
    mode, never a deletion: it is raised, and stops the run as before.
    """
    try:
        return call()
    except StripeNotFoundError as failure:
        if failure.other_mode:
            raise
        try:
            found = gateway.retrieve_customer(customer_id)
        except StripeNotFoundError as missing:
            if missing.other_mode:
                raise
            return DeletedMeanwhile(customer_id)
        if found.get("deleted"):
            return DeletedMeanwhile(customer_id)
        raise


def scan_workers(limiter: RequestLimiter) -> int:
    """Enough concurrent calls to use one endpoint's budget at Stripe's latency."""
    return workers_for(min(limiter.global_limit, limiter.per_endpoint_limit))


def scan_customers(
    customer_ids: Sequence[str],
    fetch: Callable[[str], T],
    *,
    workers: int,
    description: str,
) -> list[T]:
    """`fetch(id)` for every id, concurrently; results in the order of the ids."""
    if not customer_ids:
        return []
    with (
        progress(description, total=len(customer_ids)) as advance,
        ThreadPoolExecutor(max(1, workers), thread_name_prefix="per-customer") as pool,
    ):

        def one(customer_id: str) -> T:
            result = fetch(customer_id)
            advance(1)
            return result

        # Each call runs in a copy of this context: its logs carry run_id and job.
        futures = [pool.submit(copy_context().run, one, cid) for cid in customer_ids]
        return [future.result() for future in futures]


class OverlappedScan(Generic[T]):
    """Per-customer calls started as listing pages arrive; see the module docstring.

    `keep(page)` says which records of a page get a call (e.g. the in-scope ones);
    `fetch(record)` makes the call.
    """

    def __init__(
        self,
        fetch: Callable[[Record], T],
        keep: Callable[[Sequence[Record]], Sequence[bool]],
        *,
        workers: int,
        description: str,
    ) -> None:
        self._fetch = fetch
        self._keep = keep
        self._description = description
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="per-customer")
        self._futures: dict[str, Future[T]] = {}
        self._lock = threading.Lock()
        self._done = 0
        self._advance: Advance | None = None
        self._failed = threading.Event()

    def _one(self, record: Record) -> T:
        try:
            result = self._fetch(record)
        except BaseException:
            self._failed.set()
            raise
        with self._lock:
            self._done += 1
            if self._advance is not None:
                self._advance(1)
        return result

    def submit(self, records: Iterable[Record]) -> None:
        """Start a call for each record not started yet (all of them are kept)."""
        with self._lock:
            for record in records:
                customer_id = str(record["id"])
                if customer_id not in self._futures:
                    self._futures[customer_id] = self._pool.submit(
                        copy_context().run, self._one, record
                    )

    def submit_page(self, page: list[dict[str, Any]]) -> None:
        """The listing's `on_page`: start the calls for the kept customers of this page."""
        if self._failed.is_set():
            # Stop the listing early: the run fails anyway, with the call's own error.
            self._raise_first_error()
        self.submit(record for record, kept in zip(page, self._keep(page), strict=True) if kept)

    def _raise_first_error(self) -> None:
        with self._lock:
            futures = list(self._futures.values())
        for future in futures:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def finish(self, records: Sequence[Record]) -> list[T]:
        """Every call for `records` (the final, kept customers), in their order."""
        try:
            self.submit(records)
            with progress(self._description, total=len(records)) as advance:
                with self._lock:
                    advance(self._done)
                    self._advance = advance
                return [self._futures[str(record["id"])].result() for record in records]
        finally:
            self.close()

    def close(self) -> None:
        """Drop calls not started yet and wait for the running ones (after a failure too)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
