"""The HTTP client under `stripe.StripeClient`: every attempt passes the limiter and is counted.

Retrying here, below the SDK, rather than around its calls means each page of an
``auto_paging_iter`` and each retry is limited and counted, and a failed page is retried
without restarting the listing. The SDK's own retries stay off (``max_network_retries=0``).
Writes are not sent again after a 5xx (see `RetryPolicy`); whether a write's connection
dropped on some attempt is kept per thread (`last_request_dropped`), so a DELETE answered
404 on its retry can be told from one that found the customer already gone.

Bulk listings walk the SDK's way (`list(...).auto_paging_iter()`) but read their items as
JSON (`list_skeletons`): within that scope, a list page answered 2xx is kept here, as
Stripe sent it, and the SDK is handed the list's skeleton (`object`, `url`, `has_more`,
each item's `id` and `object`), which is all its walk reads. The SDK still builds every
request (headers, encoding, the API version it pins), follows `has_more` with
`starting_after`, and raises its own errors from every other answer; what is skipped is a
`StripeObject` per nested field of every customer, many times the CPU of reading the
page's JSON (more with expanded payment methods): at Stripe's rates, enough to make the
interpreter, not the limiter, set the listing's pace.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import stripe

from reconcile.logs import get_logger
from reconcile.stripe_api.endpoints import endpoint_of
from reconcile.stripe_api.limiter import RequestLimiter
from reconcile.stripe_api.retry import RetryPolicy, header

__all__ = ["LimitedHTTPClient", "RequestStats"]

_log = get_logger(__name__)

Response = tuple[Any, int, Mapping[str, str]]


@dataclass
class RequestStats:
    """Counts for the run summary; safe to update from many threads."""

    by_endpoint: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    rate_limited: int = 0
    errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.by_endpoint.values())

    def record_attempt(self, endpoint: str) -> None:
        with self._lock:
            self.by_endpoint[endpoint] = self.by_endpoint.get(endpoint, 0) + 1

    def record_rate_limited(self) -> None:
        with self._lock:
            self.rate_limited += 1

    def record_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def record_error(self) -> None:
        with self._lock:
            self.errors += 1

    def snapshot(self) -> dict[str, Any]:
        """Plain data for summary.json."""
        with self._lock:
            return {
                "requests": dict(sorted(self.by_endpoint.items())),
                "total": sum(self.by_endpoint.values()),
                "retries": self.retries,
                "rate_limited": self.rate_limited,
                "errors": self.errors,
            }


class LimitedHTTPClient(stripe.HTTPClient):
    """Wraps the SDK's default client (requests) with the limiter, our retries and counts."""

    name = "stripe-reconcile"

    def __init__(
        self,
        limiter: RequestLimiter,
        *,
        policy: RetryPolicy | None = None,
        stats: RequestStats | None = None,
        inner: stripe.HTTPClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        timeout_seconds: float = 30.0,
    ) -> None:
        super().__init__()
        self.limiter = limiter
        self.policy = policy or RetryPolicy()
        self.stats = stats or RequestStats()
        # A request unanswered after timeout_seconds fails like a dropped connection (and
        # is retried as one); the SDK's default would wait 80 s each time.
        self._inner = inner or stripe.RequestsClient(timeout=timeout_seconds)
        self._sleep = sleep
        self._rng = rng or random.Random()
        # random.Random is not safe to share between threads without a lock.
        self._rng_lock = threading.Lock()
        self._last = threading.local()

    @contextlib.contextmanager
    def list_skeletons(self) -> Iterator[None]:
        """Within this scope (this thread only), answer the SDK's list requests with the
        list's skeleton and keep the page itself for `taken_page` (see the module)."""
        self._last.skeletons = True
        try:
            yield
        finally:
            self._last.skeletons = False

    def taken_page(self) -> list[dict[str, Any]] | None:
        """The items of the last list page answered in `list_skeletons` on this thread,
        as Stripe sent them; None once taken (no new page came)."""
        page: list[dict[str, Any]] | None = getattr(self._last, "page", None)
        self._last.page = None
        return page

    def limiter_waited(self) -> float:
        """Seconds this thread has waited on the limiter so far (a running total): what a
        caller timing its requests subtracts to learn their latency alone."""
        return float(getattr(self._last, "waited", 0.0))

    def last_request_dropped(self) -> bool:
        """Whether an attempt of this thread's last request lost its connection (the
        request may have been applied, and its retry saw the result)."""
        return bool(getattr(self._last, "dropped", False))

    def request_with_retries(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        post_data: Any = None,
        max_network_retries: int | None = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        response = self._send(method, url, headers, post_data, self._inner.request)
        if getattr(self._last, "skeletons", False) and 200 <= response[1] < 300:
            return self._skeleton(response)
        return response  # type: ignore[return-value]

    def request_stream_with_retries(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        post_data: Any = None,
        max_network_retries: int | None = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[Any, int, Mapping[str, str]]:
        return self._send(method, url, headers, post_data, self._inner.request_stream)

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        # One attempt, still limited and counted, for callers that bypass the retry entry.
        endpoint = endpoint_of(method, url)
        self.limiter.acquire(endpoint)
        self.stats.record_attempt(endpoint)
        return self._inner.request(method, url, headers, post_data)

    def close(self) -> None:
        self._inner.close()  # type: ignore[no-untyped-call]

    def _skeleton(self, response: Response) -> tuple[str, int, Mapping[str, str]]:
        body, status, headers = response
        text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
        try:
            page = json.loads(text)
        except ValueError:
            return text, status, headers  # the SDK says what is wrong with it
        if not isinstance(page, dict) or page.get("object") != "list":
            return text, status, headers
        items = page.get("data")
        if not isinstance(items, list):
            return text, status, headers
        if not all(isinstance(item, dict) and "id" in item for item in items):
            return text, status, headers
        self._last.page = items
        skeleton = {
            "object": "list",
            "url": page.get("url"),
            "has_more": page.get("has_more"),
            "data": [{"id": item["id"], "object": item.get("object")} for item in items],
        }
        return json.dumps(skeleton), status, headers

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any,
        send: Callable[..., Response],
    ) -> Response:
        endpoint = endpoint_of(method, url)
        write = method.lower() in ("post", "delete")
        retries_done = 0
        self._last.dropped = False
        while True:
            waited = self.limiter.acquire(endpoint)
            self._last.waited = self.limiter_waited() + waited
            self.stats.record_attempt(endpoint)
            response: Response | None = None
            connection_error: stripe.APIConnectionError | None = None
            try:
                response = send(method, url, headers, post_data)
            except stripe.APIConnectionError as exc:
                connection_error = exc
                self._last.dropped = True
            status = response[1] if response is not None else None
            response_headers = response[2] if response is not None else None
            if status == 429:
                self.stats.record_rate_limited()
                # Stripe names the limit it applied; without the header (a lock timeout)
                # the rate was not the cause and nothing slows.
                self.limiter.rate_limited(
                    endpoint, header(response_headers, "Stripe-Rate-Limited-Reason")
                )
            retryable = connection_error is not None and connection_error.should_retry
            if not self.policy.should_retry(
                retries_done,
                status,
                response_headers,
                connection_error_retryable=retryable,
                write=write,
            ):
                break
            retries_done += 1
            self.stats.record_retry()
            with self._rng_lock:
                delay = self.policy.delay(retries_done, response_headers, self._rng)
            _log.info(
                "stripe_retry",
                endpoint=endpoint,
                status=status if status is not None else "connection error",
                retry=retries_done,
                delay_s=round(delay, 3),
            )
            self._sleep(delay)
        if connection_error is not None:
            self.stats.record_error()
            raise connection_error
        assert response is not None
        if response[1] >= 400:
            self.stats.record_error()
        return response
