"""The pager against a Stripe-compatible server that rejects ``created`` filters.

The sandbox accepts them, so this uses a tiny stand-in server (real HTTP, stdlib) that
answers like such a server: a 400 naming ``created``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import structlog

from reconcile.errors import StripeAuthError, StripeConnectionError
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter import RequestLimiter
from reconcile.stripe_api.pager import iter_customer_window, iter_customers

KEY = "sk_test_" + "F" * 24
# Newest first, as Stripe lists them.
CUSTOMERS = [
    {"id": f"cus_{n:04d}", "object": "customer", "created": 1_000 + n, "livemode": False}
    for n in range(250, 0, -1)
]


class _NoCreatedFilter(BaseHTTPRequestHandler):
    seen: list[dict[str, list[str]]]

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.seen.append(query)
        if any(name.startswith("created") for name in query):
            self._reply(400, {"error": {
                "type": "invalid_request_error",
                "code": "parameter_unknown",
                "param": next(name for name in query if name.startswith("created")),
                "message": "Received unknown parameter: created",
            }})
            return
        limit = int(query.get("limit", ["10"])[0])
        start = 0
        if "starting_after" in query:
            ids = [c["id"] for c in CUSTOMERS]
            start = ids.index(query["starting_after"][0]) + 1
        page = CUSTOMERS[start : start + limit]
        self._reply(200, {
            "object": "list", "url": url.path, "data": page,
            "has_more": start + limit < len(CUSTOMERS),
        })

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, list[str]]]]]:
    seen: list[dict[str, list[str]]] = []
    handler = type("Handler", (_NoCreatedFilter,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def gateway_for(url: str) -> StripeGateway:
    return StripeGateway(KEY, api_base=url, limiter=RequestLimiter(1000), sleep=lambda _: None)


def test_fallback_pages_plainly_and_filters_created_here(
    server: tuple[str, list[dict[str, list[str]]]],
) -> None:
    url, seen = server
    gateway = gateway_for(url)
    with structlog.testing.capture_logs() as logs:
        got = list(iter_customers(gateway, created_lt=1_101))
        again = list(iter_customers(gateway, created_lt=1_051))
    assert [c["created"] for c in got] == list(range(1_100, 1_000, -1))
    assert [c["created"] for c in again] == list(range(1_050, 1_000, -1))
    assert [entry["event"] for entry in logs].count("created_filter_rejected") == 1
    # One rejected request, then three plain pages; the second pass does not ask again.
    assert sum(any(k.startswith("created") for k in q) for q in seen) == 1
    assert gateway.stats.by_endpoint["GET /v1/customers"] == 1 + 3 + 3


def test_fallback_window_stops_below_its_lower_bound(
    server: tuple[str, list[dict[str, list[str]]]],
) -> None:
    url, seen = server
    got = list(iter_customer_window(gateway_for(url), 1_200, 1_210))
    assert [c["created"] for c in got] == list(range(1_209, 1_199, -1))
    # Newest first: the listing stops at the first customer older than the window.
    assert len(seen) == 1 + 1


class _Refusing(BaseHTTPRequestHandler):
    """Answers every request as Stripe does a revoked key (401) or a restricted one (403)."""

    def do_GET(self) -> None:
        if self.path.startswith("/v1/customers/search"):
            status, body = 403, {"error": {
                "type": "invalid_request_error",
                "message": "The provided key 'rk_test_*****Zz99' does not have the required "
                "permissions for this endpoint on account 'acct_1'. Having the "
                "'rak_customer_read' permission would allow this request to continue.",
            }}
        else:
            status, body = 401, {"error": {
                "type": "invalid_request_error",
                "message": f"Invalid API Key provided: {KEY[:8]}{'*' * 20}{KEY[-4:]}",
            }}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_401_and_403_become_auth_errors_naming_the_masked_key() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        gateway = gateway_for(f"http://127.0.0.1:{httpd.server_address[1]}")
        with pytest.raises(StripeAuthError) as refused:
            list(iter_customers(gateway, created_lt=2_000))
        assert str(refused.value) == (
            "Stripe refused the key sk_test_...FFFF (401 authentication_error): "
            "check STRIPE_SECRET_KEY"
        )
        with pytest.raises(StripeAuthError, match="rak_customer_read") as forbidden:
            list(gateway.search_customers('email:"x"'))
        assert KEY not in str(forbidden.value)
        assert gateway.stats.retries == 0
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_connection_refused_is_retried_then_names_the_api_base() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    slept: list[float] = []
    gateway = StripeGateway(
        KEY, api_base=f"http://127.0.0.1:{port}", limiter=RequestLimiter(1000),
        max_retries=3, sleep=slept.append,
    )
    with pytest.raises(StripeConnectionError, match=f"127.0.0.1:{port}"):
        gateway.retrieve_customer("cus_1")
    assert len(slept) == 3
    assert gateway.stats.by_endpoint == {"GET /v1/customers/{id}": 4}
    assert (gateway.stats.retries, gateway.stats.errors) == (3, 1)
