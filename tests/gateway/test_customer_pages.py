"""`StripeGateway.customer_pages`: raw pages of the bulk listing, walked as auto_paging_iter."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from reconcile.stripe_api.errors import StripeRequestError, sdk_error_for
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter import RequestLimiter
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


def test_pages_hold_the_same_customers_as_auto_paging_iter(customers: SandboxServer) -> None:
    gateway = _gateway(customers.url)
    expected = list(gateway.list_customers(created_lt=1_700_000_080))

    pages = list(gateway.customer_pages(created_lt=1_700_000_080))

    assert [len(p.records) for p in pages] == [100, 100, 40]
    assert [p.has_more for p in pages] == [True, True, False]
    assert [r for p in pages for r in p.records] == expected
    # Each body is the page as the server sent it: it parses to the same customers.
    assert [json.loads(p.body)["data"] for p in pages] == [p.records for p in pages]
    # The walk sends the filters again with starting_after = the last id of each page.
    listed = [e for e in customers.request_log.entries() if e.path == "/v1/customers"]
    calls = listed[-3:]
    assert [c.params.get("starting_after") for c in calls] == [
        None,
        pages[0].records[-1]["id"],
        pages[1].records[-1]["id"],
    ]
    assert all(c.params["created"] == {"lt": "1700000080"} for c in calls)


def test_a_cursor_resumes_after_the_id_it_is_given(customers: SandboxServer) -> None:
    gateway = _gateway(customers.url)
    everyone = [r["id"] for p in gateway.customer_pages() for r in p.records]

    resumed = [
        r["id"] for p in gateway.customer_pages(starting_after=everyone[149]) for r in p.records
    ]

    assert resumed == everyone[150:]


class _Answering(BaseHTTPRequestHandler):
    """Answers every GET with `answer` as JSON and keeps each request's headers and path."""

    answer: dict[str, Any]
    seen: list[dict[str, str]]

    def do_GET(self) -> None:
        self.seen.append({**dict(self.headers), "path": self.path})
        payload = json.dumps(self.answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _answering(answer: dict[str, Any]) -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_Answering,), {"answer": answer, "seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_answer_that_is_not_a_list_names_the_api_base() -> None:
    with (
        _answering({"object": "customer", "id": "cus_1", "livemode": False}) as (url, _),
        pytest.raises(StripeRequestError, match="STRIPE_API_BASE"),
    ):
        next(_gateway(url).customer_pages())


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, {"type": "invalid_request_error", "code": "parameter_unknown", "param": "created",
               "message": "Received unknown parameter: created"}),
        (400, {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many"}),
        (400, {"type": "idempotency_error", "message": "Keys for idempotent requests ..."}),
        (401, {"type": "invalid_request_error", "message": "Invalid API Key provided"}),
        (402, {"type": "card_error", "code": "card_declined", "param": "", "message": "no"}),
        (403, {"type": "invalid_request_error", "message": "does not have the required ..."}),
        (404, {"type": "invalid_request_error", "code": "resource_missing", "param": "id",
               "message": "No such customer: 'cus_1'"}),
        (429, {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many"}),
        (500, {"type": "api_error", "message": "Something went wrong"}),
        (502, None),
    ],
)
def test_errors_read_without_the_requestor_are_the_sdks_own(
    status: int, error: dict[str, str] | None
) -> None:
    body = json.dumps({"error": error}) if error is not None else "<html>Bad gateway</html>"
    parsed = json.loads(body) if error is not None else None
    headers = {"Request-Id": "req_1"}
    mine = sdk_error_for(body, status, parsed, headers)
    if parsed is None:
        # The SDK's requestor answers a body that is not JSON with an APIError too.
        assert type(mine) is stripe.APIError
        assert mine.http_status == status
        return
    # The SDK's own mapping, reached through its private requestor: only this test uses it.
    requestor = stripe._api_requestor._APIRequestor._global_instance()  # type: ignore[no-untyped-call]
    with pytest.raises(stripe.StripeError) as sdk:
        requestor.handle_error_response(body, status, parsed, headers, "V1")
    assert type(mine) is type(sdk.value)
    assert (mine.http_status, mine.code) == (sdk.value.http_status, sdk.value.code)
    assert mine.user_message == sdk.value.user_message
    assert getattr(mine, "param", None) == getattr(sdk.value, "param", None)


def test_pages_are_asked_for_with_the_key_and_the_api_version_the_sdk_pins() -> None:
    with _answering({"object": "list", "data": [], "has_more": False}) as (url, seen):
        gateway = _gateway(url)
        pages = list(gateway.customer_pages(created_lt=20, created_gte=10, expand=["x.y"]))
    assert [p.records for p in pages] == [[]]
    (request,) = seen
    assert request["Authorization"] == f"Bearer {KEY}"
    assert request["Stripe-Version"] == stripe.api_version
    assert request["path"] == (
        "/v1/customers?limit=100&created%5Blt%5D=20&created%5Bgte%5D=10&expand%5B0%5D=data.x.y"
    )
    assert gateway.stats.by_endpoint == {"GET /v1/customers": 1}
