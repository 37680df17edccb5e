"""The one place that talks to Stripe: a `stripe.StripeClient` behind the limiter and retries.

Methods return plain dicts (``to_dict()``); SDK objects never leave this module. Errors
leave as the project's own (`reconcile.errors`, `reconcile.stripe_errors`).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlencode

import stripe

from reconcile.errors import ConfigError, ReconcileError
from reconcile.limiter import RequestLimiter
from reconcile.mode import Mode, mask_key, mode_of_key
from reconcile.retry import RetryPolicy
from reconcile.stripe_errors import StripeRequestError, sdk_error_for, translate_stripe_error
from reconcile.stripe_http import LimitedHTTPClient, RequestStats

__all__ = ["DEFAULT_API_BASE", "CustomerPage", "RequestStats", "StripeGateway"]

DEFAULT_API_BASE = "https://api.stripe.com"


@dataclass(frozen=True)
class CustomerPage:
    """One page of `GET /v1/customers`: its customers as plain dicts and the JSON text
    Stripe sent, which the listing stores as it came (no second serialisation)."""

    records: list[dict[str, Any]]
    body: bytes
    has_more: bool


class StripeGateway:
    """Customers and payment methods of one Stripe account, in the key's mode.

    Thread-safe: one gateway (one client, one limiter, one set of counts) serves every
    worker of a process.
    """

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        max_requests_per_second: float = 0,
        limiter: RequestLimiter | None = None,
        max_retries: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        http_client: stripe.HTTPClient | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.mode: Mode = mode_of_key(api_key)
        self.masked_key = mask_key(api_key)
        self.api_base = api_base.rstrip("/") if api_base else DEFAULT_API_BASE
        self.limiter = limiter or RequestLimiter.for_mode(self.mode, max_requests_per_second)
        # A policy, when given, wins over max_retries (its delays too: tests shorten them).
        self.policy = policy or RetryPolicy(max_retries=max_retries)
        self.stats = RequestStats()
        # Whether the server accepts list filters on `created`: None until the pager knows.
        self.created_filter_supported: bool | None = None
        self._last_response = threading.local()  # per worker: the audit log's request id
        self._http = LimitedHTTPClient(
            self.limiter,
            policy=self.policy,
            stats=self.stats,
            inner=http_client,
            sleep=sleep,
            rng=rng,
        )
        # The bulk listing's requests (customer_pages): the headers the SDK would send.
        self._list_headers = {
            "Authorization": f"Bearer {api_key.strip()}",
            "Stripe-Version": stripe.api_version,
            "User-Agent": f"Stripe/v1 PythonBindings/{stripe.VERSION} stripe-reconcile",
        }
        self._client = stripe.StripeClient(
            api_key.strip(),
            base_addresses={"api": self.api_base} if api_base else None,
            # Retries happen in LimitedHTTPClient so each one passes the limiter.
            max_network_retries=0,
            http_client=self._http,
        )

    def close(self) -> None:
        self._http.close()

    # -- mode ---------------------------------------------------------------------------

    def confirm_mode(self, obj: Mapping[str, Any]) -> None:
        """Refuse data whose ``livemode`` disagrees with the key's mode (a misrouted API base)."""
        livemode = obj.get("livemode")
        if livemode is None or bool(livemode) == self.mode.livemode:
            return
        answered = "live" if livemode else "test"
        raise ConfigError(
            f"The key {self.masked_key} is a {self.mode.value}-mode key but {self.api_base} "
            f"answered with {answered}-mode data: check STRIPE_API_BASE and STRIPE_SECRET_KEY"
        )

    # -- customers ----------------------------------------------------------------------

    def list_customers(
        self,
        *,
        created_lt: int | None = None,
        created_gte: int | None = None,
        starting_after: str | None = None,
        expand: Sequence[str] = (),
        email: str | None = None,
        page_size: int = 100,
    ) -> Iterator[dict[str, Any]]:
        """Every customer matching the filters, newest first, one page in memory at a time.

        ``expand`` names fields of a customer (``invoice_settings.default_payment_method``);
        the ``data.`` prefix a list needs is added here.
        """
        params = _customer_list_params(
            created_lt, created_gte, starting_after, expand, email, page_size
        )
        return self._paged(
            "GET /v1/customers", lambda: self._client.v1.customers.list(_params(params))
        )

    def customer_pages(
        self,
        *,
        created_lt: int | None = None,
        created_gte: int | None = None,
        starting_after: str | None = None,
        expand: Sequence[str] = (),
        page_size: int = 100,
    ) -> Iterator[CustomerPage]:
        """The listing of `list_customers`, a page at a time, for the bulk listing.

        The walk is `auto_paging_iter`'s (the same filters again, `starting_after` the
        last id, until `has_more` is false), sent through the SDK's HTTP client layer
        (`LimitedHTTPClient`: the limiter, retries, counts), with the API version the SDK
        pins, and errors raised as the SDK's own types (`sdk_error_for`), so they are
        translated like every other call's. What is skipped is the SDK's handling of a
        successful answer: a `StripeObject` per customer (about 20 ms of CPU per page of
        100), and even through `raw_request` a parse into OrderedDicts and a debug log
        line formatted from the whole body on every answer — measured at ten times
        Stripe's test limit, 40 % of the interpreter's time, enough to make threads wake
        too late for their slots at the limiter. A generator: each page is asked for
        when the caller wants it.
        """
        params = _customer_list_params(
            created_lt, created_gte, starting_after, expand, None, page_size
        )
        while True:
            url = f"{self.api_base}/v1/customers?{_query(params)}"
            try:
                body, status, headers = self._http.request_with_retries(
                    "get", url, self._list_headers
                )
            except stripe.StripeError as exc:
                raise self._translate(exc, "GET /v1/customers", None) from exc
            raw = body if isinstance(body, bytes) else body.encode("utf-8")
            try:
                page = json.loads(raw)
            except ValueError:
                page = None
            if status >= 400:
                text = raw.decode("utf-8", errors="replace")
                error = sdk_error_for(text, status, page, headers)
                raise self._translate(error, "GET /v1/customers", None) from error
            records = page.get("data") if isinstance(page, dict) else None
            if not isinstance(records, list) or page.get("object") != "list":
                raise StripeRequestError(
                    f"{self.api_base} answered GET /v1/customers with something other than "
                    "a list: check STRIPE_API_BASE points at Stripe or a Stripe-compatible "
                    "server",
                    status=status,
                    code=None,
                    param=None,
                )
            for record in records:
                self.confirm_mode(record)
            has_more = bool(page.get("has_more")) and bool(records)
            yield CustomerPage(records, raw, has_more)
            if not has_more:
                return
            params["starting_after"] = records[-1]["id"]

    def retrieve_customer(self, customer_id: str) -> dict[str, Any]:
        """The customer; a deleted one is ``{"id", "object", "deleted": True}``."""
        return self._one(
            "GET /v1/customers/{id}",
            lambda: self._client.v1.customers.retrieve(customer_id),
            object_id=customer_id,
        )

    def search_customers(self, query: str, *, limit: int = 100) -> Iterator[dict[str, Any]]:
        """Search (eventually consistent: never use it to check what was just written)."""
        params: dict[str, Any] = {"query": query, "limit": limit}
        return self._paged(
            "GET /v1/customers/search", lambda: self._client.v1.customers.search(_params(params))
        )

    def create_customer(self, params: Mapping[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        return self._one(
            "POST /v1/customers",
            lambda: self._client.v1.customers.create(
                _params(params), {"idempotency_key": _required(idempotency_key)}
            ),
        )

    def update_customer(
        self, customer_id: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        return self._one(
            "POST /v1/customers/{id}",
            lambda: self._client.v1.customers.update(
                customer_id, _params(params), {"idempotency_key": _required(idempotency_key)}
            ),
            object_id=customer_id,
        )

    def delete_customer(self, customer_id: str, *, idempotency_key: str) -> dict[str, Any]:
        return self._one(
            "DELETE /v1/customers/{id}",
            lambda: self._client.v1.customers.delete(
                customer_id, None, {"idempotency_key": _required(idempotency_key)}
            ),
            object_id=customer_id,
        )

    # -- payment methods ----------------------------------------------------------------

    def list_payment_methods(
        self, customer_id: str, *, type: str = "card"
    ) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {"type": type, "limit": 100}
        return self._paged(
            "GET /v1/customers/{id}/payment_methods",
            lambda: self._client.v1.customers.payment_methods.list(customer_id, _params(params)),
            object_id=customer_id,
        )

    def attach_payment_method(
        self, pm_id: str, customer_id: str, *, idempotency_key: str
    ) -> dict[str, Any]:
        return self._one(
            "POST /v1/payment_methods/{id}/attach",
            lambda: self._client.v1.payment_methods.attach(
                pm_id, {"customer": customer_id}, {"idempotency_key": _required(idempotency_key)}
            ),
            object_id=pm_id,
        )

    def detach_payment_method(self, pm_id: str, *, idempotency_key: str) -> dict[str, Any]:
        return self._one(
            "POST /v1/payment_methods/{id}/detach",
            lambda: self._client.v1.payment_methods.detach(
                pm_id, None, {"idempotency_key": _required(idempotency_key)}
            ),
            object_id=pm_id,
        )

    # -- subscriptions ------------------------------------------------------------------

    def list_subscriptions(
        self, customer_id: str, *, status: str = "active"
    ) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {"customer": customer_id, "status": status, "limit": 100}
        return self._paged(
            "GET /v1/subscriptions",
            lambda: self._client.v1.subscriptions.list(_params(params)),
            object_id=customer_id,
        )

    # -- plumbing -----------------------------------------------------------------------

    def last_request_id(self) -> str | None:
        """Stripe's request id of this thread's last single-object call (for the audit log)."""
        return getattr(self._last_response, "request_id", None)

    def _one(
        self, what: str, call: Callable[[], stripe.StripeObject], *, object_id: str | None = None
    ) -> dict[str, Any]:
        self._last_response.request_id = None
        try:
            found = call()
        except stripe.StripeError as exc:
            self._last_response.request_id = exc.request_id
            raise self._translate(exc, what, object_id) from exc
        response = found.last_response
        self._last_response.request_id = response.request_id if response else None
        obj = found.to_dict()
        self.confirm_mode(obj)
        return obj

    def _paged(
        self,
        what: str,
        first_page: Callable[[], Any],
        *,
        object_id: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        # A generator, so nothing is sent until the caller starts iterating.
        try:
            for obj in first_page().auto_paging_iter():
                plain: dict[str, Any] = obj.to_dict()
                self.confirm_mode(plain)
                yield plain
        except stripe.StripeError as exc:
            raise self._translate(exc, what, object_id) from exc

    def _translate(
        self, exc: stripe.StripeError, what: str, object_id: str | None
    ) -> ReconcileError:
        return translate_stripe_error(
            exc,
            what=what,
            masked_key=self.masked_key,
            mode=self.mode,
            api_base=self.api_base,
            object_id=object_id,
            max_retries=self.policy.max_retries,
        )


def _required(idempotency_key: str) -> str:
    # Writes are retried, so each one needs a key derived from the data (never random).
    if not idempotency_key or len(idempotency_key) > 255:
        raise ValueError("idempotency_key must be 1 to 255 characters, derived from the data")
    return idempotency_key


def _customer_list_params(
    created_lt: int | None,
    created_gte: int | None,
    starting_after: str | None,
    expand: Sequence[str],
    email: str | None,
    page_size: int,
) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": page_size}
    created: dict[str, int] = {}
    if created_lt is not None:
        created["lt"] = created_lt
    if created_gte is not None:
        created["gte"] = created_gte
    if created:
        params["created"] = created
    if starting_after is not None:
        params["starting_after"] = starting_after
    if expand:
        params["expand"] = [f"data.{field}" for field in expand]
    if email is not None:
        params["email"] = email
    return params


def _query(params: Mapping[str, Any]) -> str:
    """Stripe's form encoding of list parameters: `created[lt]=1`, `expand[0]=data.x`."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if isinstance(value, Mapping):
            pairs += [(f"{key}[{sub}]", str(item)) for sub, item in value.items()]
        elif isinstance(value, list | tuple):
            pairs += [(f"{key}[{index}]", str(item)) for index, item in enumerate(value)]
        else:
            pairs.append((key, str(value)))
    return urlencode(pairs)


def _params(params: Mapping[str, Any]) -> Any:
    # The SDK types each call's params as its own TypedDict; ours are built at run time.
    return cast(Any, dict(params))
