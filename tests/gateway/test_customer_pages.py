"""`StripeGateway.customers_list` and the listing's page-worths: the SDK's auto_paging_iter."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest
import stripe

from reconcile.errors import StripeAuthError, StripeNotFoundError
from reconcile.stripe_api.errors import StripeRequestError
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter import RequestLimiter
from reconcile.stripe_api.pager import iter_window_pages
from sandbox.runner import SandboxServer

KEY = "sk_test_" + "CustomerPages0123456789"


@pytest.fixture
def customers(sandbox_server: SandboxServer) -> Iterator[SandboxServer]:
    sandbox_server.store.reset()
    data = sandbox_server.store.mode("test")
    for n in range(250):
        data.add_customer({"email": f"page{n}@example.com"}, created=1_700_000_000 + n // 3)
    yield sandbox_server
    sandbox_server.store.reset()


def _gateway(url: str) -> StripeGateway:
    return StripeGateway(KEY, api_base=url, limiter=RequestLimiter(25.0))


def _list_calls(sandbox: SandboxServer) -> list[Any]:
    return [e for e in sandbox.request_log.entries() if e.path == "/v1/customers"]


def test_page_worths_are_the_sdks_walk_and_each_is_handed_over_before_the_next_request(
    customers: SandboxServer,
) -> None:
    gateway = _gateway(customers.url)
    expected = list(gateway.customers_list(created_lt=1_700_000_080))
    customers.request_log.clear()

    walk = iter_window_pages(gateway, None, 1_700_000_080)
    first = next(walk)
    # The second page is not asked for until the caller wants more.
    assert len(_list_calls(customers)) == 1
    pages = [first, *walk]

    assert [len(p.records) for p in pages] == [100, 100, 40]
    assert [p.last for p in pages] == [False, False, True]
    assert [r for p in pages for r in p.records] == expected
    # auto_paging_iter sends the filters again with starting_after = the last id of each page.
    calls = _list_calls(customers)
    assert [c.params.get("starting_after") for c in calls] == [
        None,
        pages[0].records[-1]["id"],
        pages[1].records[-1]["id"],
    ]
    assert all(c.params["created"] == {"lt": "1700000080"} for c in calls)


def test_a_window_ending_on_a_full_page_ends_with_an_empty_last_page_worth(
    customers: SandboxServer,
) -> None:
    # Customers 150 to 249 (created 1_700_000_050 to 1_700_000_083): exactly one page.
    customers.request_log.clear()
    pages = list(iter_window_pages(_gateway(customers.url), 1_700_000_050, 1_700_000_084))
    assert [(len(p.records), p.last) for p in pages] == [(100, False), (0, True)]
    # The page said has_more false: the SDK's walk asks for nothing more.
    assert len(_list_calls(customers)) == 1


def test_a_cursor_resumes_after_the_id_it_is_given(customers: SandboxServer) -> None:
    gateway = _gateway(customers.url)
    everyone = [r["id"] for r in gateway.customers_list()]

    resumed = [r["id"] for r in gateway.customers_list(starting_after=everyone[149])]

    assert resumed == everyone[150:]


class _Answering(BaseHTTPRequestHandler):
    """Answers every GET with `answer` as JSON (or text) and `status`, and keeps each
    request's headers and path."""

    answer: dict[str, Any] | str
    status: int
    seen: list[dict[str, str]]

    def do_GET(self) -> None:
        self.seen.append({**dict(self.headers), "path": self.path})
        answer = self.answer
        payload = (answer if isinstance(answer, str) else json.dumps(answer)).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _answering(
    answer: dict[str, Any] | str, status: int = 200
) -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_Answering,), {"answer": answer, "status": status, "seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(
    "answer",
    [
        {"object": "customer", "id": "cus_1", "livemode": False},
        '["cus_1"]',
        {"object": "list", "url": "/v1/customers", "has_more": False, "data": ["cus_1"]},
    ],
)
def test_an_answer_that_is_not_a_list_of_objects_names_the_api_base(
    answer: dict[str, Any] | str,
) -> None:
    with (
        _answering(answer) as (url, _),
        pytest.raises(StripeRequestError, match="STRIPE_API_BASE"),
    ):
        next(_gateway(url).customers_list())


@pytest.mark.parametrize(
    ("status", "error", "sdk_type", "ours"),
    [
        (
            400,
            {
                "type": "invalid_request_error",
                "code": "parameter_unknown",
                "param": "created",
                "message": "Received unknown parameter: created",
            },
            stripe.InvalidRequestError,
            StripeRequestError,
        ),
        (
            401,
            {"type": "invalid_request_error", "message": "Invalid API Key provided"},
            stripe.AuthenticationError,
            StripeAuthError,
        ),
        (
            403,
            {"type": "invalid_request_error", "message": "does not have the required ..."},
            stripe.PermissionError,
            StripeAuthError,
        ),
        (
            404,
            {
                "type": "invalid_request_error",
                "code": "resource_missing",
                "param": "id",
                "message": "No such customer: 'cus_1'",
            },
            stripe.InvalidRequestError,
            StripeNotFoundError,
        ),
        (
            500,
            {"type": "api_error", "message": "Something went wrong"},
            stripe.APIError,
            StripeRequestError,
        ),
        (502, "<html>Bad gateway</html>", stripe.APIError, StripeRequestError),
    ],
)
def test_the_listings_errors_are_the_sdks_own_translated(
    status: int, error: dict[str, str] | str, sdk_type: type, ours: type
) -> None:
    answer = error if isinstance(error, str) else {"error": error}
    with _answering(answer, status) as (url, _):
        gateway = StripeGateway(KEY, api_base=url, limiter=RequestLimiter(25.0), max_retries=0)
        with pytest.raises(ours) as raised:
            next(gateway.customers_list())
    # Raised by the SDK's requestor from the answer, then translated.
    assert type(raised.value.__cause__) is sdk_type
    assert "sk_test_" + "CustomerPages" not in str(raised.value)


def test_pages_are_asked_for_with_the_headers_and_encoding_the_sdk_builds() -> None:
    with _answering({"object": "list", "url": "/v1/customers", "data": [], "has_more": False}) as (
        url,
        seen,
    ):
        gateway = _gateway(url)
        pages = list(iter_window_pages(gateway, 10, 20, expand=["x.y"]))
    assert [p.records for p in pages] == [[]]
    (request,) = seen
    assert request["Authorization"] == f"Bearer {KEY}"
    assert request["Stripe-Version"] == stripe.api_version
    assert request["User-Agent"].startswith(f"Stripe/v1 PythonBindings/{stripe.VERSION}")
    assert json.loads(request["X-Stripe-Client-User-Agent"])["httplib"] == "stripe-reconcile"
    assert request["path"].startswith("/v1/customers?")
    query = unquote(request["path"].split("?", 1)[1]).split("&")
    assert sorted(query) == sorted(
        ["limit=100", "created[lt]=20", "created[gte]=10", "expand[0]=data.x.y"]
    )
    assert gateway.stats.by_endpoint == {"GET /v1/customers": 1}
