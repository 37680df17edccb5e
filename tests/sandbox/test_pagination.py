# mypy: disable-error-code="union-attr"
"""Listing customers: order, cursors both ways, `created` and `email` filters, expand."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import stripe

from sandbox.runner import SandboxServer
from tests.sandbox.conftest import Raw, customer_record

BASE = 1_600_000_000


def _load(sandbox: SandboxServer, count: int, *, ties_every: int = 1) -> list[dict[str, Any]]:
    """`count` customers; `ties_every` consecutive ones share a `created` second."""
    records = [
        customer_record(
            f"cus_{i:06d}", BASE + (i // ties_every) * 60, email=f"u{i % 7}@example.com"
        )
        for i in range(count)
    ]
    sandbox.store.bulk_load("test", records)
    return records


def _newest_first(records: list[dict[str, Any]]) -> list[str]:
    # Newest first; equal `created` keeps the later-loaded one first (stable and deterministic).
    order = sorted(enumerate(records), key=lambda pair: (pair[1]["created"], pair[0]), reverse=True)
    return [record["id"] for _, record in order]


def test_auto_paging_walks_every_customer_newest_first_over_many_pages(
    sandbox: SandboxServer, client: stripe.StripeClient
) -> None:
    records = _load(sandbox, 1_050, ties_every=3)
    pages = client.v1.customers.list({"limit": 100})
    seen = [c.id for c in pages.auto_paging_iter()]
    assert seen == _newest_first(records)
    list_calls = [e for e in sandbox.request_log.entries() if e.path == "/v1/customers"]
    assert len(list_calls) == 11


def test_default_limit_is_ten_and_list_envelope_matches_stripe(
    raw: Raw, sandbox: SandboxServer
) -> None:
    _load(sandbox, 25)
    body = raw("GET", "/v1/customers").json()
    assert body["object"] == "list"
    assert body["url"] == "/v1/customers"
    assert body["has_more"] is True
    assert len(body["data"]) == 10


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten"])
def test_limit_out_of_range_is_a_400(raw: Raw, limit: str) -> None:
    response = raw("GET", "/v1/customers", params={"limit": limit})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "limit"


def test_ending_before_pages_backwards_to_the_newest(
    sandbox: SandboxServer, client: stripe.StripeClient
) -> None:
    records = _load(sandbox, 230, ties_every=2)
    expected = _newest_first(records)
    oldest = expected[-1]
    backwards: list[str] = []
    page = client.v1.customers.list({"limit": 50, "ending_before": oldest})
    while True:
        backwards = [c.id for c in page.data] + backwards
        if not page.has_more:
            break
        page = client.v1.customers.list({"limit": 50, "ending_before": page.data[0].id})
    assert backwards == expected[:-1]
    # The SDK's own backward iteration agrees.
    sdk_pages = client.v1.customers.list({"limit": 50, "ending_before": oldest})
    assert sorted(c.id for c in sdk_pages.auto_paging_iter()) == sorted(expected[:-1])


def test_both_cursors_at_once_is_a_400(raw: Raw, sandbox: SandboxServer) -> None:
    _load(sandbox, 3)
    response = raw(
        "GET",
        "/v1/customers",
        params={"starting_after": "cus_000001", "ending_before": "cus_000000"},
    )
    assert response.status_code == 400


def test_unknown_cursor_is_a_404_naming_the_parameter(raw: Raw) -> None:
    response = raw("GET", "/v1/customers", params={"starting_after": "cus_nope"})
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "starting_after"


def test_a_deleted_customer_still_works_as_a_cursor(
    sandbox: SandboxServer, client: stripe.StripeClient
) -> None:
    records = _load(sandbox, 30)
    expected = _newest_first(records)
    client.v1.customers.delete(expected[9])
    page = client.v1.customers.list({"limit": 5, "starting_after": expected[9]})
    assert [c.id for c in page.data] == expected[10:15]


@pytest.mark.parametrize(
    ("created", "keep"),
    [
        ({"gt": BASE + 600}, lambda t: t > BASE + 600),
        ({"gte": BASE + 600}, lambda t: t >= BASE + 600),
        ({"lt": BASE + 600}, lambda t: t < BASE + 600),
        ({"lte": BASE + 600}, lambda t: t <= BASE + 600),
        ({"gte": BASE + 300, "lt": BASE + 1200}, lambda t: BASE + 300 <= t < BASE + 1200),
        (BASE + 600, lambda t: t == BASE + 600),
    ],
)
def test_created_filters_with_paging(
    sandbox: SandboxServer, client: stripe.StripeClient, created: Any, keep: Any
) -> None:
    records = _load(sandbox, 120, ties_every=4)
    expected = [cid for cid in _newest_first(records) if keep(int(cid[4:]) // 4 * 60 + BASE)]
    seen = [
        c.id for c in client.v1.customers.list({"limit": 7, "created": created}).auto_paging_iter()
    ]
    assert seen == expected
    assert seen  # each filter selects something


def test_created_windows_partition_the_whole_listing(
    sandbox: SandboxServer, client: stripe.StripeClient
) -> None:
    # How the pager splits a run: adjacent [gte, lt) windows, paged separately, add up.
    records = _load(sandbox, 300, ties_every=5)
    edges = [BASE, BASE + 700, BASE + 1500, BASE + 3600]
    union: list[str] = []
    for low, high in reversed(list(itertools.pairwise(edges))):
        window = client.v1.customers.list({"limit": 100, "created": {"gte": low, "lt": high}})
        union += [c.id for c in window.auto_paging_iter()]
    assert union == _newest_first(records)


def test_email_filter_is_exact_and_case_sensitive(
    sandbox: SandboxServer, client: stripe.StripeClient
) -> None:
    sandbox.store.bulk_load(
        "test",
        [
            customer_record("cus_a", BASE, email="Jo@example.com"),
            customer_record("cus_b", BASE + 1, email="jo@example.com"),
            customer_record("cus_c", BASE + 2, email="jo@example.com"),
            customer_record("cus_d", BASE + 3, email="jo@example.com.au"),
        ],
    )
    lower = client.v1.customers.list({"email": "jo@example.com"})
    assert [c.id for c in lower.data] == ["cus_c", "cus_b"]
    upper = client.v1.customers.list({"email": "Jo@example.com"})
    assert [c.id for c in upper.data] == ["cus_a"]
    paged = client.v1.customers.list({"email": "jo@example.com", "limit": 1})
    assert [c.id for c in paged.auto_paging_iter()] == ["cus_c", "cus_b"]
    filtered = client.v1.customers.list({"email": "jo@example.com", "created": {"lt": BASE + 2}})
    assert [c.id for c in filtered.data] == ["cus_b"]


def test_email_filter_follows_updates(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"email": "old@example.com"})
    client.v1.customers.update(customer.id, {"email": "new@example.com"})
    assert client.v1.customers.list({"email": "old@example.com"}).data == []
    assert [c.id for c in client.v1.customers.list({"email": "new@example.com"}).data] == [
        customer.id
    ]


def test_expand_default_payment_method_on_a_list(client: stripe.StripeClient) -> None:
    method = client.v1.payment_methods.create(
        {"type": "card", "card": {"number": "4242424242424242", "exp_month": 4, "exp_year": 2040}}
    )
    customer = client.v1.customers.create(
        {"payment_method": method.id, "invoice_settings": {"default_payment_method": method.id}}
    )
    plain = client.v1.customers.list({})
    assert plain.data[0].invoice_settings.default_payment_method == method.id
    expanded = client.v1.customers.list(
        {"expand": ["data.invoice_settings.default_payment_method"]}
    )
    inline = expanded.data[0].invoice_settings.default_payment_method
    assert expanded.data[0].id == customer.id
    assert inline.id == method.id
    assert inline.card.last4 == "4242"


def test_expand_accepts_both_bracket_forms(raw: Raw, client: stripe.StripeClient) -> None:
    method = client.v1.payment_methods.create(
        {"type": "card", "card": {"number": "4242424242424242", "exp_month": 4, "exp_year": 2040}}
    )
    client.v1.customers.create(
        {"payment_method": method.id, "invoice_settings": {"default_payment_method": method.id}}
    )
    path = "data.invoice_settings.default_payment_method"
    for name in ("expand[]", "expand[0]"):
        body = raw("GET", "/v1/customers", params={name: path}).json()
        assert body["data"][0]["invoice_settings"]["default_payment_method"]["id"] == method.id


def test_expand_without_the_data_prefix_is_refused_as_stripe_does(raw: Raw) -> None:
    response = raw(
        "GET", "/v1/customers", params={"expand[]": "invoice_settings.default_payment_method"}
    )
    assert response.status_code == 400
    assert "data.invoice_settings.default_payment_method" in response.json()["error"]["message"]


def test_a_page_deep_in_a_large_index_is_served_from_the_sorted_index(
    sandbox: SandboxServer, raw: Raw
) -> None:
    records = _load(sandbox, 20_000)
    expected = _newest_first(records)
    body = raw(
        "GET", "/v1/customers", params={"limit": 100, "starting_after": expected[18_999]}
    ).json()
    assert [c["id"] for c in body["data"]] == expected[19_000:19_100]
    assert body["has_more"] is True
