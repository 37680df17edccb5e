"""The gateway and pager over real HTTP against the sandbox.

The sandbox's own rate limits are off here (the limiter's guarantees are tested on a fake
clock); backoff sleeps are recorded, not slept.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from reconcile.errors import ConfigError, StripeNotFoundError
from reconcile.stripe_api.errors import StripeRequestError
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter import RequestLimiter
from reconcile.stripe_api.pager import iter_customer_window, iter_customers
from sandbox.runner import RateLimits, SandboxConfig, SandboxServer

TEST_KEY = "sk_test_" + "GatewayTests0000Abcd"
LIVE_KEY = "sk_live_" + "GatewayTests0000Wxyz"


def customer(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"cus_G{n:05d}",
        "created": 1_700_000_000 + n,
        "email": f"user{n}@example.test",
        "name": f"User {n}",
        "phone": None,
        "description": None,
        "metadata": {"user_id": str(n)},
        "default_payment_method": None,
        **fields,
    }


def card(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"pm_G{n:05d}",
        "created": 1_700_000_000 + n,
        "card": {"brand": "visa", "last4": "4242", "exp_month": 8, "exp_year": 2030,
                 "fingerprint": f"fp{n}"},
        **fields,
    }


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(latency_ms=0, limits=RateLimits(enabled=False))) as sb:
        yield sb


@pytest.fixture
def sandbox(server: SandboxServer) -> SandboxServer:
    server.store.reset()
    server.request_log.clear()
    server.faults.clear()
    server.store.bulk_load("test", [customer(n) for n in range(1, 351)], [])
    return server


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def gateway(
    sandbox: SandboxServer, sleeps: Sleeps, key: str = TEST_KEY, **kw: Any
) -> StripeGateway:
    return StripeGateway(
        key,
        api_base=sandbox.url,
        limiter=RequestLimiter(1000, per_endpoint_limit=1000, search_limit=1000),
        sleep=sleeps,
        rng=random.Random(0),
        **kw,
    )


def test_listing_pages_with_created_lt_fixed(sandbox: SandboxServer, sleeps: Sleeps) -> None:
    gw = gateway(sandbox, sleeps)
    got = list(iter_customers(gw, created_lt=1_700_000_301))
    assert [c["id"] for c in got] == [f"cus_G{n:05d}" for n in range(300, 0, -1)]
    assert all(isinstance(c, dict) and c["livemode"] is False for c in got)
    pages = [e for e in sandbox.request_log.entries() if e.path == "/v1/customers"]
    assert len(pages) >= 3
    for page in pages:
        assert page.params["created"] == {"lt": "1700000301"}
        assert page.params["limit"] == "100"
    assert "starting_after" not in pages[0].params
    assert pages[1].params["starting_after"] == "cus_G00201"
    assert gw.stats.by_endpoint == {"GET /v1/customers": len(pages)}
    assert gw.created_filter_supported is True


def test_a_window_resumes_after_its_last_id(sandbox: SandboxServer, sleeps: Sleeps) -> None:
    gw = gateway(sandbox, sleeps)
    window = list(iter_customer_window(gw, 1_700_000_100, 1_700_000_200, "cus_G00150"))
    assert [c["id"] for c in window] == [f"cus_G{n:05d}" for n in range(149, 99, -1)]


def test_expand_adds_the_data_prefix(sandbox: SandboxServer, sleeps: Sleeps) -> None:
    sandbox.store.bulk_load(
        "test",
        [customer(400, default_payment_method="pm_G00400")],
        [card(400, customer="cus_G00400")],
    )
    gw = gateway(sandbox, sleeps)
    first = next(
        iter(gw.customers_list(expand=["invoice_settings.default_payment_method"], page_size=1))
    )
    assert first["invoice_settings"]["default_payment_method"]["id"] == "pm_G00400"
    sent = sandbox.request_log.entries()[-1].params["expand"]  # the SDK sends expand[0]=...
    assert list(sent.values() if isinstance(sent, dict) else sent) == [
        "data.invoice_settings.default_payment_method"
    ]


def test_mode_is_confirmed_against_livemode(sandbox: SandboxServer, sleeps: Sleeps) -> None:
    sandbox.store.bulk_load("live", [customer(9_001)], [])
    live = gateway(sandbox, sleeps, LIVE_KEY)
    assert [c["id"] for c in live.customers_list()] == ["cus_G09001"]
    assert live.retrieve_customer("cus_G09001")["livemode"] is True
    test = gateway(sandbox, sleeps)
    with pytest.raises(ConfigError, match=r"sk_test_\.\.\.Abcd is a test-mode key"):
        test.confirm_mode({"id": "cus_x", "livemode": True})


def test_missing_customer_of_the_other_mode(sandbox: SandboxServer, sleeps: Sleeps) -> None:
    sandbox.store.bulk_load("live", [customer(9_002)], [])
    gw = gateway(sandbox, sleeps)
    with pytest.raises(StripeNotFoundError) as caught:
        gw.retrieve_customer("cus_G09002")
    assert (caught.value.object_id, caught.value.other_mode) == ("cus_G09002", True)
    assert "exists in live mode" in str(caught.value)
    with pytest.raises(StripeNotFoundError) as absent:
        gw.retrieve_customer("cus_Nowhere1")
    assert absent.value.other_mode is False
    assert gw.stats.errors == 2
    assert gw.stats.retries == 0


def test_deleted_customer_is_returned_as_deleted(sandbox: SandboxServer, sleeps: Sleeps) -> None:
    gw = gateway(sandbox, sleeps)
    deleted = gw.delete_customer("cus_G00007", idempotency_key="test-delete-7")
    assert (deleted.customer_id, deleted.deleted_now) == ("cus_G00007", True)
    assert gw.retrieve_customer("cus_G00007") == {
        "id": "cus_G00007", "object": "customer", "deleted": True,
    }
    assert "cus_G00007" not in {c["id"] for c in iter_customers(gw, created_lt=1_800_000_000)}
    delete = next(e for e in sandbox.request_log.entries() if e.method == "DELETE")
    assert delete.idempotency_key == "test-delete-7"


def test_injected_500s_are_retried_with_backoff(sandbox: SandboxServer, sleeps: Sleeps) -> None:
    sandbox.faults.fail_next("GET", "/v1/customers/{id}", 3, status=500)
    gw = gateway(sandbox, sleeps)
    assert gw.retrieve_customer("cus_G00042")["id"] == "cus_G00042"
    statuses = [e.status for e in sandbox.request_log.entries()]
    assert statuses == [500, 500, 500, 200]
    assert len(sleeps) == 3
    assert [round(s) for s in sleeps] == [1, 2, 4] or all(
        0.75 * 2**i <= s <= 1.25 * 2**i for i, s in enumerate(sleeps)
    )
    assert gw.stats.by_endpoint == {"GET /v1/customers/{id}": 4}
    assert (gw.stats.retries, gw.stats.rate_limited, gw.stats.errors) == (3, 0, 0)


def test_429s_are_retried_and_counted(sandbox: SandboxServer, sleeps: Sleeps) -> None:
    sandbox.faults.fail_next("GET", "/v1/customers", 2, status=429)
    gw = gateway(sandbox, sleeps)
    assert len(list(iter_customers(gw, created_lt=1_700_000_101))) == 100
    assert gw.stats.rate_limited == 2
    assert gw.stats.retries == 2
    assert len(sleeps) == 2


def test_a_failed_page_is_retried_without_restarting_the_listing(
    sandbox: SandboxServer, sleeps: Sleeps
) -> None:
    gw = gateway(sandbox, sleeps)
    listing = iter_customers(gw, created_lt=1_700_000_351)
    first_page = [next(listing) for _ in range(100)]
    sandbox.faults.fail_next("GET", "/v1/customers", 1, status=503)
    rest = list(listing)
    assert len({c["id"] for c in first_page + rest}) == 350
    cursors = [e.params.get("starting_after") for e in sandbox.request_log.entries()]
    assert cursors.count(None) == 1  # the first page was never fetched again
    assert gw.stats.retries == 1


def test_retries_give_up_after_max_retries(sandbox: SandboxServer, sleeps: Sleeps) -> None:
    sandbox.faults.fail_next("GET", "/v1/customers/{id}", 10, status=500)
    gw = gateway(sandbox, sleeps, max_retries=2)
    with pytest.raises(StripeRequestError) as caught:
        gw.retrieve_customer("cus_G00042")
    assert caught.value.status == 500
    assert "after 2 retries" in str(caught.value)
    assert len(sandbox.request_log.entries()) == 3


def test_a_write_is_not_resent_under_its_key_after_a_500(
    sandbox: SandboxServer, sleeps: Sleeps
) -> None:
    # Stripe keeps a 500 as the key's answer for 24 hours: the same key would only get it
    # back. The gateway reads whether the create happened (it did not), then tries again
    # under a key of its own.
    sandbox.faults.fail_next("POST", "/v1/customers", 1, status=500)
    gw = gateway(sandbox, sleeps)
    params = {"email": "new@example.test", "metadata": {"user_id": "u-new"}}
    created = gw.create_customer(params, idempotency_key="run-1:create:u-new")
    posts = [e for e in sandbox.request_log.entries() if e.method == "POST"]
    assert [(e.idempotency_key, e.status) for e in posts] == [
        ("run-1:create:u-new", 500),
        ("run-1:create:u-new:r1", 200),
    ]
    listed = iter_customers(gw, created_lt=2_000_000_000)
    assert [c["id"] for c in listed if c["email"] == params["email"]] == [created["id"]]
    updated = gw.update_customer(
        created["id"], {"metadata": {"plan": "pro"}}, idempotency_key="run-1:update:u-new"
    )
    assert updated["metadata"] == {"user_id": "u-new", "plan": "pro"}


def test_a_dropped_write_is_resent_under_the_same_key(
    sandbox: SandboxServer, sleeps: Sleeps
) -> None:
    sandbox.faults.drop_next("POST", "/v1/customers", 1)
    gw = gateway(sandbox, sleeps)
    params = {"email": "drop@example.test", "metadata": {"user_id": "u-drop"}}
    created = gw.create_customer(params, idempotency_key="run-1:create:u-drop")
    again = gw.create_customer(params, idempotency_key="run-1:create:u-drop")
    assert again["id"] == created["id"]  # replayed, read back, not created twice
    posts = [e for e in sandbox.request_log.entries() if e.method == "POST"]
    assert [e.idempotency_key for e in posts] == ["run-1:create:u-drop"] * 3
    assert [e.status for e in posts] == [0, 200, 200]


def test_search_and_payment_methods(sandbox: SandboxServer, sleeps: Sleeps) -> None:
    sandbox.store.bulk_load("test", [], [card(500), card(501, customer="cus_G00005")])
    gw = gateway(sandbox, sleeps)
    found = list(gw.search_customers('metadata["user_id"]:"12"'))
    assert [c["id"] for c in found] == ["cus_G00012"]
    attached = gw.attach_payment_method(
        "pm_G00500", "cus_G00005", idempotency_key="run-1:attach:pm_G00500"
    )
    assert attached["customer"] == "cus_G00005"
    methods = list(gw.list_payment_methods("cus_G00005"))
    assert sorted(m["id"] for m in methods) == ["pm_G00500", "pm_G00501"]
    assert gw.stats.by_endpoint == {
        "GET /v1/customers/search": 1,
        "POST /v1/payment_methods/{id}/attach": 1,
        "GET /v1/customers/{id}/payment_methods": 1,
    }
    listing = next(e for e in sandbox.request_log.entries() if e.path.endswith("payment_methods"))
    assert listing.params["type"] == "card"


def test_writes_require_an_idempotency_key(sandbox: SandboxServer, sleeps: Sleeps) -> None:
    gw = gateway(sandbox, sleeps)
    with pytest.raises(ValueError, match="idempotency_key"):
        gw.delete_customer("cus_G00001", idempotency_key="")
    assert sandbox.request_log.entries() == []
