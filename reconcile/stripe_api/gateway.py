"""The one place that talks to Stripe: a `stripe.StripeClient` behind the limiter and retries.

Methods return plain dicts (``to_dict()``, or for the customer listing the customers as
Stripe sent them); SDK objects never leave this module. Errors are the SDK's own, raised
by its requestor, and leave translated into the project's (`reconcile.errors`,
`reconcile.stripe_api.errors`).

Writes are exactly once per idempotency key, and never taken on trust:
- an answer Stripe replayed for the key (`Idempotent-Replayed: true`) is checked by reading
  the object back: it counts only if the object shows what the write asked for;
- after a 5xx (which Stripe keeps as the key's answer for 24 hours) the object is read: if
  it shows the write, the write happened; if not, it is tried again under `<key>:r<n>`, up
  to the retry policy's count. A create after a 5xx is read back through the listing's
  exact email filter; one without an email is not tried again (another key could create
  the customer twice): it fails, and the next run's listing shows whether it happened;
- a DELETE (keys do not apply to it) that finds the customer gone is confirmed with a
  retrieve: deleted by this call when an earlier attempt's answer was lost, else already
  deleted by someone else.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import stripe

from reconcile.errors import ConfigError, ReconcileError, StripeError, StripeNotFoundError
from reconcile.logs import get_logger
from reconcile.mode import Mode, mask_key, mode_of_key
from reconcile.rules.idempotency import retry_key, unmet_params
from reconcile.stripe_api.errors import StripeRequestError, translate_stripe_error
from reconcile.stripe_api.http import LimitedHTTPClient, RequestStats
from reconcile.stripe_api.limiter import RequestLimiter
from reconcile.stripe_api.limiter_registry import account_of, shared_limiter
from reconcile.stripe_api.retry import RetryPolicy, header

__all__ = [
    "DEFAULT_API_BASE",
    "CustomerDeletion",
    "RequestStats",
    "StripeGateway",
    "WriteNotConfirmedError",
]

DEFAULT_API_BASE = "https://api.stripe.com"

log = get_logger(__name__)

# Reads a written object back: given the answered object (a replay), or None after a 5xx.
# None back means there is nothing to read (a create whose answer was a 5xx).
ReadBack = Callable[[dict[str, Any] | None], dict[str, Any] | None]


class WriteNotConfirmedError(StripeError):
    """A write whose answer cannot be trusted (a replay, a 5xx) and whose object, read back,
    does not show it: it did not happen, or may not have."""


@dataclass(frozen=True)
class CustomerDeletion:
    """What a delete did: `deleted_now` when this call deleted the customer (its answer may
    have been lost and confirmed by a retrieve), False when it was already deleted."""

    customer_id: str
    deleted_now: bool
    confirmed_by_retrieve: bool = False


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
        timeout_seconds: float = 30.0,
    ) -> None:
        self.mode: Mode = mode_of_key(api_key, api_base)
        self.masked_key = mask_key(api_key)
        # A name for the key's account (a hash): what is kept about the account goes by it.
        self.account = account_of(api_key, api_base)
        self.api_base = api_base.rstrip("/") if api_base else DEFAULT_API_BASE
        # One limiter per account in the process: gateways side by side share it. Runs pass
        # theirs (jobs.runner.build_gateway: the configured share, Redis); this default
        # keeps the mode's whole limits.
        self.limiter = limiter or shared_limiter(
            api_key,
            api_base=self.api_base,
            max_requests_per_second=max_requests_per_second,
            share=1.0,
        )
        # A policy, when given, wins over max_retries (its delays too: tests shorten them).
        self.policy = policy or RetryPolicy(max_retries=max_retries)
        self._sleep = sleep
        self._rng = rng or random.Random()
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
            timeout_seconds=timeout_seconds,
        )
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

    def customers_list(
        self,
        *,
        created_lt: int | None = None,
        created_gte: int | None = None,
        starting_after: str | None = None,
        expand: Sequence[str] = (),
        email: str | None = None,
        page_size: int = 100,
    ) -> Iterator[dict[str, Any]]:
        """`GET /v1/customers` matching the filters, newest first, one page in memory at a time.

        The SDK's own walk: `client.v1.customers.list(params).auto_paging_iter()` (the same
        filters again, `starting_after` the last id, until `has_more` is false), every page
        sent through `LimitedHTTPClient` (the limiter, retries, counts), each customer as
        Stripe sent it (`_walked`). A generator: a page is asked for only when the caller
        wants its first customer, so a caller that stops after a page-worth of customers
        sends nothing more. ``expand`` names fields of a customer
        (``invoice_settings.default_payment_method``); the ``data.`` prefix a list needs is
        added here.
        """
        params = _customer_list_params(
            created_lt, created_gte, starting_after, expand, email, page_size
        )
        return self._walked(
            "GET /v1/customers", lambda: self._client.v1.customers.list(_params(params))
        )

    def retrieve_customer(
        self, customer_id: str, *, expand: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The customer; a deleted one is ``{"id", "object", "deleted": True}``. ``expand``
        names fields of the customer (``invoice_settings.default_payment_method``)."""
        params: dict[str, Any] = {"expand": list(expand)} if expand else {}
        return self._one(
            "GET /v1/customers/{id}",
            lambda: self._client.v1.customers.retrieve(customer_id, _params(params)),
            object_id=customer_id,
        )

    def list_events(
        self,
        *,
        created_gte: int | None = None,
        created_lt: int | None = None,
        types: Sequence[str] = (),
        page_size: int = 100,
    ) -> Iterator[dict[str, Any]]:
        """Events (kept 30 days by Stripe), newest first, one page in memory at a time.

        ``types`` are exact type names (Stripe's ``types[]``, at most 20). Each event as
        Stripe sent it (`_walked`): converting a day of events through the SDK's objects
        made the client's CPU, not the limiter, set an incremental run's pace."""
        params: dict[str, Any] = {"limit": page_size}
        created = {"gte": created_gte, "lt": created_lt}
        if any(bound is not None for bound in created.values()):
            params["created"] = {k: v for k, v in created.items() if v is not None}
        if types:
            params["types"] = list(types)
        return self._walked("GET /v1/events", lambda: self._client.v1.events.list(_params(params)))

    def search_customers(self, query: str, *, limit: int = 100) -> Iterator[dict[str, Any]]:
        """Search (eventually consistent: never use it to check what was just written)."""
        params: dict[str, Any] = {"query": query, "limit": limit}
        return self._paged(
            "GET /v1/customers/search", lambda: self._client.v1.customers.search(_params(params))
        )

    def create_customer(self, params: Mapping[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        def read_back(answered: dict[str, Any] | None) -> dict[str, Any] | None:
            if answered is not None:
                return self.retrieve_customer(str(answered["id"]))
            # After a 5xx there is no id to read: the listing's exact email filter (never
            # search, which lags writes) finds a customer the create may have made.
            email = params.get("email")
            if not email:
                return None
            made = [
                customer
                for customer in self.customers_list(email=str(email))
                if not unmet_params(customer, params)
            ]
            return made[0] if made else {"deleted": True}

        return self._write(
            "POST /v1/customers",
            lambda key: self._client.v1.customers.create(
                _params(params), {"idempotency_key": key}
            ),
            key=idempotency_key,
            params=params,
            read_back=read_back,
            label="the customer it created",
        )

    def update_customer(
        self, customer_id: str, params: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        return self._write(
            "POST /v1/customers/{id}",
            lambda key: self._client.v1.customers.update(
                customer_id, _params(params), {"idempotency_key": key}
            ),
            key=idempotency_key,
            params=params,
            read_back=lambda _answered: self.retrieve_customer(customer_id),
            label=f"customer {customer_id}",
            object_id=customer_id,
        )

    def delete_customer(self, customer_id: str, *, idempotency_key: str) -> CustomerDeletion:
        """Delete, confirming by a retrieve whatever the answer leaves open (see the module)."""
        what = "DELETE /v1/customers/{id}"
        _required(idempotency_key)
        attempt = 0
        while True:
            key = idempotency_key if attempt == 0 else retry_key(idempotency_key, attempt)
            self._last_response.request_id = None
            try:
                found = self._client.v1.customers.delete(
                    customer_id, None, {"idempotency_key": key}
                )
            except stripe.StripeError as exc:
                self._last_response.request_id = exc.request_id
                error = self._translate(exc, what, customer_id)
                lost = self._http.last_request_dropped() or attempt > 0
                if isinstance(error, StripeNotFoundError) and not error.other_mode:
                    if not self._shows_deleted(customer_id):
                        raise error from exc
                    return CustomerDeletion(customer_id, lost, confirmed_by_retrieve=True)
                if (exc.http_status or 0) < 500:
                    raise error from exc
                # Learn whether the delete happened before sending it again.
                if self._shows_deleted(customer_id):
                    return CustomerDeletion(customer_id, True, confirmed_by_retrieve=True)
                if attempt >= self.policy.max_retries:
                    raise error from exc
                attempt += 1
                self._pause_before(attempt, what, exc.http_status)
                continue
            self._accept(found)
            return CustomerDeletion(customer_id, deleted_now=True)

    def _shows_deleted(self, customer_id: str) -> bool:
        try:
            return bool(self.retrieve_customer(customer_id).get("deleted"))
        except StripeNotFoundError as missing:
            if missing.other_mode:
                raise
            return False

    # -- payment methods ----------------------------------------------------------------

    def list_payment_methods(
        self, customer_id: str, *, type: str | None = "card"
    ) -> Iterator[dict[str, Any]]:
        """The customer's payment methods of one `type`; `type=None`: of every type (bank
        accounts, SEPA debits, ... as well as cards), Stripe's listing without the filter."""
        params: dict[str, Any] = {"limit": 100}
        if type is not None:
            params["type"] = type
        return self._paged(
            "GET /v1/customers/{id}/payment_methods",
            lambda: self._client.v1.customers.payment_methods.list(customer_id, _params(params)),
            object_id=customer_id,
        )

    def retrieve_payment_method(self, pm_id: str) -> dict[str, Any]:
        return self._one(
            "GET /v1/payment_methods/{id}",
            lambda: self._client.v1.payment_methods.retrieve(pm_id),
            object_id=pm_id,
        )

    def attach_payment_method(
        self, pm_id: str, customer_id: str, *, idempotency_key: str
    ) -> dict[str, Any]:
        def read_back(answered: dict[str, Any] | None) -> dict[str, Any] | None:
            # A test token (pm_card_visa) attaches as a new payment method with its own id.
            return self.retrieve_payment_method(str((answered or {}).get("id") or pm_id))

        return self._write(
            "POST /v1/payment_methods/{id}/attach",
            lambda key: self._client.v1.payment_methods.attach(
                pm_id, {"customer": customer_id}, {"idempotency_key": key}
            ),
            key=idempotency_key,
            params={"customer": customer_id},
            read_back=read_back,
            label=f"payment method {pm_id}",
            object_id=pm_id,
        )

    # -- subscriptions ------------------------------------------------------------------

    def list_subscriptions(
        self, customer_id: str, *, status: str = "active"
    ) -> Iterator[dict[str, Any]]:
        """The customer's subscriptions in `status`; `status="all"`: in every status, the
        canceled ones included (without `status`, Stripe leaves the canceled ones out)."""
        params: dict[str, Any] = {"customer": customer_id, "status": status, "limit": 100}
        return self._paged(
            "GET /v1/subscriptions",
            lambda: self._client.v1.subscriptions.list(_params(params)),
            object_id=customer_id,
        )

    # -- plumbing -----------------------------------------------------------------------

    def limiter_waited(self) -> float:
        """Seconds this thread has waited on the limiter so far (a running total)."""
        return self._http.limiter_waited()

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
        return self._accept(found)

    def _accept(self, found: stripe.StripeObject) -> dict[str, Any]:
        response = found.last_response
        self._last_response.request_id = response.request_id if response else None
        obj = found.to_dict()
        self.confirm_mode(obj)
        return obj

    def _write(
        self,
        what: str,
        send: Callable[[str], stripe.StripeObject],
        *,
        key: str,
        params: Mapping[str, Any],
        read_back: ReadBack,
        label: str,
        object_id: str | None = None,
    ) -> dict[str, Any]:
        """One POST, exactly once per key, its answer checked where it cannot be trusted."""
        _required(key)
        attempt = 0
        while True:
            sent_key = key if attempt == 0 else retry_key(key, attempt)
            self._last_response.request_id = None
            try:
                found = send(sent_key)
            except stripe.StripeError as exc:
                self._last_response.request_id = exc.request_id
                status = exc.http_status or 0
                if status < 500:
                    raise self._translate(exc, what, object_id) from exc
                # Stripe keeps this 5xx as the key's answer: read whether the write happened.
                fresh = read_back(None)
                if fresh is None:
                    raise WriteNotConfirmedError(
                        f"Stripe answered {what} with {status}, and whether it happened cannot "
                        "be read back: not tried again under another key, which could apply it "
                        "twice; the next run's listing shows whether it did"
                    ) from exc
                if not fresh.get("deleted") and not unmet_params(fresh, params):
                    return fresh
                if attempt >= self.policy.max_retries:
                    raise self._translate(exc, what, object_id) from exc
                attempt += 1
                self._pause_before(attempt, what, status)
                continue
            obj = self._accept(found)
            response = found.last_response
            replayed = header(response.headers if response else None, "Idempotent-Replayed")
            if replayed != "true":
                return obj
            request_id = self.last_request_id()
            fresh = read_back(obj)
            self._last_response.request_id = request_id
            unmet = ["deleted"] if fresh is None or fresh.get("deleted") else None
            unmet = unmet or unmet_params(fresh or {}, params)
            if unmet:
                raise WriteNotConfirmedError(
                    f"Stripe replayed an earlier answer for this key ({what}); {label} does not "
                    f"hold {', '.join(unmet)}: the write did not happen; run the job again"
                )
            return fresh or obj

    def _pause_before(self, attempt: int, what: str, status: int | None) -> None:
        delay = self.policy.delay(attempt, None, self._rng)
        log.info("stripe_write_retry", endpoint=what, status=status, retry=attempt, delay_s=delay)
        self._sleep(delay)

    def _paged(
        self,
        what: str,
        first_page: Callable[[], Any],
        *,
        object_id: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        # A generator, so nothing is sent until the caller starts iterating.
        try:
            page = first_page()
            if not isinstance(page, stripe.ListObject | stripe.SearchResultObject):
                raise StripeRequestError(
                    f"{self.api_base} answered {what} with something other than a list: "
                    "check STRIPE_API_BASE points at Stripe or a Stripe-compatible server",
                    status=None,
                    code=None,
                    param=None,
                )
            for obj in page.auto_paging_iter():
                plain: dict[str, Any] = obj.to_dict()
                self.confirm_mode(plain)
                yield plain
        except stripe.StripeError as exc:
            raise self._translate(exc, what, object_id) from exc

    def _walked(
        self, what: str, first_page: Callable[[], Any]
    ) -> Iterator[dict[str, Any]]:
        """`_paged` for bulk listings: the SDK's `auto_paging_iter` walks the list's
        skeletons while the items come as Stripe sent them (`LimitedHTTPClient.list_skeletons`).
        Only the SDK runs inside the scope, never the caller's code between items."""
        try:
            with self._http.list_skeletons():
                page = first_page()
            if not isinstance(page, stripe.ListObject):
                raise StripeRequestError(
                    f"{self.api_base} answered {what} with something other than a list: "
                    "check STRIPE_API_BASE points at Stripe or a Stripe-compatible server",
                    status=None,
                    code=None,
                    param=None,
                )
            items = page.auto_paging_iter()
            records: list[dict[str, Any]] = []
            index = 0
            while True:
                with self._http.list_skeletons():
                    obj = next(items, None)
                if obj is None:
                    return
                fresh = self._http.taken_page()
                if fresh is not None:
                    records, index = fresh, 0
                record = records[index] if index < len(records) else None
                if record is None or record.get("id") != obj.id:
                    raise StripeRequestError(
                        f"{self.api_base} answered {what} with a list the walk could not "
                        "follow: check STRIPE_API_BASE points at Stripe or a Stripe-compatible "
                        "server",
                        status=None,
                        code=None,
                        param=None,
                    )
                index += 1
                self.confirm_mode(record)
                yield record
        except stripe.StripeError as exc:
            raise self._translate(exc, what, None) from exc

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


def _params(params: Mapping[str, Any]) -> Any:
    # The SDK types each call's params as its own TypedDict; ours are built at run time.
    return cast(Any, dict(params))
