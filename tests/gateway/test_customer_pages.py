"""`StripeGateway.customer_pages`: raw pages of the bulk listing, walked as auto_paging_iter."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from reconcile.gateway import StripeGateway
from reconcile.limiter import RequestLimiter
from reconcile.sandbox.runner import SandboxServer
from reconcile.stripe_errors import StripeRequestError

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


class _NotAList(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        payload = json.dumps({"object": "customer", "id": "cus_1", "livemode": False}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_an_answer_that_is_not_a_list_names_the_api_base() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NotAList)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        with pytest.raises(StripeRequestError, match="STRIPE_API_BASE"):
            next(_gateway(url).customer_pages())
    finally:
        httpd.shutdown()
        httpd.server_close()
