"""Customer search: the query language subset, escaping, AND/OR, paging, errors."""

from __future__ import annotations

import pytest
import stripe

from sandbox.query import Clause, QueryError, parse_query
from sandbox.runner import SandboxServer
from tests.sandbox.conftest import Raw, customer_record


@pytest.fixture
def people(sandbox: SandboxServer) -> None:
    sandbox.store.bulk_load(
        "test",
        [
            customer_record(
                "cus_1",
                100,
                email="ann@example.com",
                name="Ann Lee",
                metadata={"user_id": "1", "plan": "pro"},
            ),
            customer_record(
                "cus_2",
                200,
                email="Bob@Example.com",
                name="Bob Stone",
                metadata={"user_id": "2", "plan": "free"},
            ),
            customer_record(
                "cus_3",
                300,
                email="cat@example.com",
                name='Cat "The Boss" Ray',
                metadata={"user_id": "3", "plan": "pro"},
            ),
            customer_record(
                "cus_4",
                400,
                email="dan@example.org",
                name="Dan Lee",
                metadata={"note": 'say "hi"\\now'},
            ),
        ],
    )


def _ids(client: stripe.StripeClient, query: str) -> list[str]:
    return [c.id for c in client.v1.customers.search({"query": query}).auto_paging_iter()]


@pytest.mark.usefixtures("people")
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('email:"ann@example.com"', ["cus_1"]),
        ('email:"bob@example.com"', ["cus_2"]),  # email search ignores case
        ('name:"Lee"', ["cus_4", "cus_1"]),
        ('name:"ann lee"', ["cus_1"]),
        ('name:"Lee Ann"', []),  # words must appear in order
        ('metadata["plan"]:"pro"', ["cus_3", "cus_1"]),
        ('metadata["user_id"]:"2"', ["cus_2"]),
        ('metadata["plan"]:"pro" AND name:"Ann"', ["cus_1"]),
        ('email:"ann@example.com" OR email:"dan@example.org"', ["cus_4", "cus_1"]),
        ('metadata["plan"]:"pro" AND -name:"Ann"', ["cus_3"]),
        ('email~"example.com"', ["cus_3", "cus_2", "cus_1"]),
        ("created>200", ["cus_4", "cus_3"]),
        ('created<=200 AND metadata["plan"]:"free"', ["cus_2"]),
        ('name:"Cat \\"The Boss\\" Ray"', ["cus_3"]),
        ('metadata["note"]:"say \\"hi\\"\\\\now"', ["cus_4"]),
    ],
)
def test_query_language(client: stripe.StripeClient, query: str, expected: list[str]) -> None:
    assert _ids(client, query) == expected


def test_search_result_envelope_and_paging(
    sandbox: SandboxServer, client: stripe.StripeClient
) -> None:
    sandbox.store.bulk_load(
        "test",
        [customer_record(f"cus_{i:03d}", 1000 + i, metadata={"plan": "pro"}) for i in range(25)],
    )
    first = client.v1.customers.search({"query": 'metadata["plan"]:"pro"', "limit": 10})
    envelope = first.to_dict()
    assert envelope["object"] == "search_result"
    assert envelope["url"] == "/v1/customers/search"
    assert first.has_more is True
    assert first.next_page
    everything = _ids(client, 'metadata["plan"]:"pro"')
    assert everything == [f"cus_{i:03d}" for i in reversed(range(25))]
    with_total = client.v1.customers.search(
        {"query": 'metadata["plan"]:"pro"', "limit": 1, "expand": ["total_count"]}
    )
    assert with_total.to_dict()["total_count"] == 25


def test_search_sees_updates_and_deletions(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"metadata": {"user_id": "77"}})
    assert _ids(client, 'metadata["user_id"]:"77"') == [customer.id]
    client.v1.customers.update(customer.id, {"metadata": {"user_id": "78"}})
    assert _ids(client, 'metadata["user_id"]:"77"') == []
    assert _ids(client, 'metadata["user_id"]:"78"') == [customer.id]
    client.v1.customers.delete(customer.id)
    assert _ids(client, 'metadata["user_id"]:"78"') == []


@pytest.mark.parametrize(
    "query",
    [
        "",
        'email:"a@example.com" AND name:"A" OR name:"B"',  # mixes AND and OR
        'email:"unterminated',
        "email:bare",
        'colour:"red"',
        'metadata[plan]:"pro"',
        'email:"a@example.com" name:"A"',  # no conjunction
        'name~"ab"',  # substring needs 3 characters
        "created>soon",
    ],
)
def test_malformed_query_is_a_400_with_a_message(raw: Raw, query: str) -> None:
    response = raw("GET", "/v1/customers/search", params={"query": query})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "query"
    assert error["message"]


def test_parser_keeps_escaped_quotes_and_backslashes() -> None:
    query = parse_query('name:"a \\"b\\" \\\\ c" OR metadata["k \\"1\\""]:"v"')
    assert query.conjunction == "OR"
    assert query.clauses == (
        Clause("name", ":", 'a "b" \\ c'),
        Clause("metadata", ":", "v", metadata_key='k "1"'),
    )


def test_parser_error_names_the_position() -> None:
    with pytest.raises(QueryError, match="character 22"):
        parse_query('email:"a@example.com" nope')
