# mypy: disable-error-code="union-attr"
"""Customers through the official SDK: create, retrieve, update (metadata rules), delete."""

from __future__ import annotations

import pytest
import stripe

from sandbox.runner import SandboxServer
from tests.sandbox.conftest import Raw, customer_record


def test_create_then_retrieve_returns_the_same_fields(client: stripe.StripeClient) -> None:
    created = client.v1.customers.create(
        {
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "phone": "+15555550100",
            "description": "first programmer",
            "metadata": {"user_id": "42", "plan": "pro"},
        }
    )
    fetched = client.v1.customers.retrieve(created.id)
    assert created.id.startswith("cus_")
    assert fetched.to_dict() == created.to_dict()
    assert fetched.email == "ada@example.com"
    assert fetched.name == "Ada Lovelace"
    assert fetched.phone == "+15555550100"
    assert fetched.description == "first programmer"
    assert fetched.metadata.to_dict() == {"user_id": "42", "plan": "pro"}
    assert fetched.livemode is False
    assert fetched.object == "customer"


def test_update_merges_metadata_keeps_omitted_keys_and_deletes_empty_ones(
    client: stripe.StripeClient,
) -> None:
    customer = client.v1.customers.create({"metadata": {"a": "1", "b": "2", "c": "3"}})
    updated = client.v1.customers.update(customer.id, {"metadata": {"a": "10", "b": "", "d": "4"}})
    assert updated.metadata.to_dict() == {"a": "10", "c": "3", "d": "4"}
    again = client.v1.customers.retrieve(customer.id)
    assert again.metadata.to_dict() == {"a": "10", "c": "3", "d": "4"}


def test_update_with_empty_metadata_clears_all_keys(raw: Raw, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"metadata": {"a": "1", "b": "2"}})
    response = raw("POST", f"/v1/customers/{customer.id}", data={"metadata": ""})
    assert response.status_code == 200
    assert response.json()["metadata"] == {}


def test_update_with_empty_string_unsets_a_field(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"email": "x@example.com", "name": "X"})
    updated = client.v1.customers.update(customer.id, {"email": "", "name": "Y"})
    assert updated.email is None
    assert updated.name == "Y"


def test_deleted_customer_retrieves_as_deleted_and_leaves_the_list(
    client: stripe.StripeClient,
) -> None:
    keep = client.v1.customers.create({"email": "keep@example.com"})
    gone = client.v1.customers.create({"email": "gone@example.com"})
    deleted = client.v1.customers.delete(gone.id)
    assert deleted.to_dict() == {"id": gone.id, "object": "customer", "deleted": True}
    assert client.v1.customers.retrieve(gone.id).to_dict() == {
        "id": gone.id,
        "object": "customer",
        "deleted": True,
    }
    listed = [c.id for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()]
    assert listed == [keep.id]


def test_updating_or_deleting_a_deleted_customer_is_a_404(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({})
    client.v1.customers.delete(customer.id)
    with pytest.raises(stripe.InvalidRequestError) as update_error:
        client.v1.customers.update(customer.id, {"name": "again"})
    with pytest.raises(stripe.InvalidRequestError) as delete_error:
        client.v1.customers.delete(customer.id)
    assert update_error.value.http_status == 404
    assert delete_error.value.code == "resource_missing"


def test_unknown_customer_is_stripes_404_body(raw: Raw) -> None:
    response = raw("GET", "/v1/customers/cus_doesnotexist")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "resource_missing"
    assert error["param"] == "id"
    assert error["message"] == "No such customer: 'cus_doesnotexist'"
    assert response.headers["Request-Id"].startswith("req_")


def test_unknown_parameter_is_a_400(raw: Raw, client: stripe.StripeClient) -> None:
    response = raw("POST", "/v1/customers", data={"emial": "x@example.com"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Received unknown parameter: emial"
    assert response.json()["error"]["param"] == "emial"
    nested = raw("POST", "/v1/customers", data={"invoice_settings[footerr]": "x"})
    assert (
        nested.json()["error"]["message"] == "Received unknown parameter: invoice_settings[footerr]"
    )
    with pytest.raises(stripe.InvalidRequestError, match="unknown parameter: colour"):
        client.v1.customers.list({"colour": "red"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        ({f"k{i}": "v" for i in range(51)}, "up to 50 keys"),
        ({"k" * 41: "v"}, "up to 40 characters"),
        ({"a[b": "v"}, "cannot contain '[' or ']'"),
        ({"a]b": "v"}, "cannot contain '[' or ']'"),
        ({"k": "v" * 501}, "up to 500 characters"),
    ],
)
def test_metadata_rules_are_400s(
    client: stripe.StripeClient, metadata: dict[str, str], fragment: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as error:
        client.v1.customers.create({"metadata": metadata})
    assert error.value.http_status == 400
    assert fragment in str(error.value.user_message)


def test_metadata_limits_count_the_merged_result(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"metadata": {f"k{i}": "v" for i in range(50)}})
    with pytest.raises(stripe.InvalidRequestError, match="up to 50 keys"):
        client.v1.customers.update(customer.id, {"metadata": {"one_more": "v"}})
    # Deleting one key and adding another stays at 50: allowed.
    updated = client.v1.customers.update(customer.id, {"metadata": {"k0": "", "one_more": "v"}})
    assert len(updated.metadata.to_dict()) == 50
    exact = client.v1.customers.create({"metadata": {"k" * 40: "v" * 500}})
    assert exact.metadata.to_dict() == {"k" * 40: "v" * 500}


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "two@@example.com", "sp ace@example.com"])
def test_invalid_email_is_a_400(raw: Raw, email: str) -> None:
    response = raw("POST", "/v1/customers", data={"email": email})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "email_invalid"
    assert error["param"] == "email"
    assert email not in error["message"]  # personal data stays out of messages


def test_store_lookups_see_api_writes(sandbox: SandboxServer, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"email": "store@example.com"})
    record = sandbox.store.customer("test", customer.id)
    assert record is not None
    assert record.email == "store@example.com"
    assert sandbox.store.customer("live", customer.id) is None


def test_many_updates_keep_list_order_and_indexes_consistent(
    sandbox: SandboxServer, client: stripe.StripeClient
) -> None:
    ids = [client.v1.customers.create({"email": f"u{i}@example.com"}).id for i in range(5)]
    before = [c.id for c in client.v1.customers.list({}).data]
    for number, customer_id in enumerate(ids):
        client.v1.customers.update(customer_id, {"email": f"v{number}@example.com"})
    assert [c.id for c in client.v1.customers.list({}).data] == before
    assert client.v1.customers.list({"email": "u0@example.com"}).data == []
    assert [c.id for c in client.v1.customers.list({"email": "v3@example.com"}).data] == [ids[3]]


def test_balance_is_set_on_create_and_update_and_listed(
    raw: Raw, client: stripe.StripeClient
) -> None:
    created = client.v1.customers.create({"balance": 1500})
    assert created.balance == 1500
    updated = client.v1.customers.update(created.id, {"balance": -250})
    assert updated.balance == -250
    assert client.v1.customers.retrieve(created.id).balance == -250
    assert [c.balance for c in client.v1.customers.list({}).data] == [-250]
    untouched = client.v1.customers.update(created.id, {"name": "x"})
    assert untouched.balance == -250
    refused = raw("POST", f"/v1/customers/{created.id}", data={"balance": "12.5"})
    assert (refused.status_code, refused.json()["error"]["param"]) == (400, "balance")


def test_balance_loads_through_the_admin_route(raw: Raw) -> None:
    record = {**customer_record("cus_owing", 7), "balance": 990}
    raw("POST", "/_sandbox/load", json={"customers": [record]})
    assert raw("GET", "/v1/customers/cus_owing").json()["balance"] == 990
