"""The request log (in-process and over `/_sandbox/`) and the admin routes."""

from __future__ import annotations

import stripe

from sandbox.requestlog import RequestLog, RequestRecord
from sandbox.runner import SandboxServer
from tests.sandbox.conftest import Raw, customer_record


def test_every_request_is_logged_with_its_facts(raw: Raw, sandbox: SandboxServer) -> None:
    raw("POST", "/v1/customers", data={"metadata[plan]": "pro"}, headers={"Idempotency-Key": "k1"})
    raw("GET", "/v1/customers", params={"limit": "5", "created[lt]": "99"})
    raw("GET", "/v1/customers", key=None)
    first, second, third = sandbox.request_log.entries()
    assert (first.mode, first.method, first.path, first.status) == (
        "test",
        "POST",
        "/v1/customers",
        200,
    )
    assert first.params == {"metadata": {"plan": "pro"}}
    assert first.idempotency_key == "k1"
    assert first.request_id.startswith("req_")
    assert second.params == {"limit": "5", "created": {"lt": "99"}}
    assert second.idempotency_key is None
    assert (third.mode, third.status) == (None, 401)
    assert first.time <= second.time <= third.time


def test_request_id_header_matches_the_log(raw: Raw, sandbox: SandboxServer) -> None:
    response = raw("GET", "/v1/customers")
    assert sandbox.request_log.entries()[-1].request_id == response.headers["Request-Id"]


def test_admin_requests_route_reads_and_clears_the_log(raw: Raw, sandbox: SandboxServer) -> None:
    raw("GET", "/v1/customers")
    raw("GET", "/v1/customers/cus_missing")
    body = raw("GET", "/_sandbox/requests", key=None).json()
    assert body["count"] == 2
    assert [(e["path"], e["status"]) for e in body["data"]] == [
        ("/v1/customers", 200),
        ("/v1/customers/cus_missing", 404),
    ]
    assert (
        raw("GET", "/_sandbox/requests", params={"limit": "1"}).json()["data"][0]["status"] == 404
    )
    assert raw("DELETE", "/_sandbox/requests").status_code == 200
    assert sandbox.request_log.entries() == []  # admin calls themselves are not logged


def test_request_log_is_bounded() -> None:
    log = RequestLog(max_entries=3)
    for number in range(5):
        log.append(
            RequestRecord(
                float(number), "test", "GET", "/v1/customers", {}, 200, None, f"req_{number}"
            )
        )
    assert [entry.request_id for entry in log.entries()] == ["req_2", "req_3", "req_4"]


def test_admin_reset_empties_both_modes(
    raw: Raw, client: stripe.StripeClient, sandbox: SandboxServer
) -> None:
    client.v1.customers.create({})
    sandbox.store.bulk_load("live", [customer_record("cus_live1", 1)])
    assert raw("POST", "/_sandbox/reset").json() == {"reset": True}
    assert (sandbox.store.count("test"), sandbox.store.count("live")) == (0, 0)
    assert sandbox.request_log.entries() == []


def test_admin_seed_uses_the_generator(raw: Raw, sandbox: SandboxServer) -> None:
    from sandbox.seed import MIN_CUSTOMERS, generate_account

    count = max(300, MIN_CUSTOMERS)
    body = raw(
        "POST", "/_sandbox/seed", json={"mode": "test", "customers": count, "seed": 7}
    ).json()
    account = generate_account(count, seed=7)
    assert body["customers"] == len(account.customers)
    assert body["payment_methods"] == len(account.payment_methods)
    live_ids = {c["id"] for c in account.live_customers}
    health = raw("GET", "/_sandbox/health").json()
    assert health["customers"] == {"test": sandbox.store.count("test"), "live": len(live_ids)}
    assert sandbox.store.count("test") == len(account.customers) - len(account.deleted_customer_ids)
    assert sandbox.store.count("live") == len(live_ids)
    for deleted in account.deleted_customer_ids:
        retrieved = raw("GET", f"/v1/customers/{deleted}").json()
        assert retrieved == {"id": deleted, "object": "customer", "deleted": True}


def test_admin_load_config_and_faults(raw: Raw, sandbox: SandboxServer) -> None:
    loaded = raw(
        "POST", "/_sandbox/load", json={"mode": "live", "customers": [customer_record("cus_l", 5)]}
    )
    assert loaded.json() == {"mode": "live", "customers": 1}
    config = raw(
        "POST",
        "/_sandbox/config",
        json={
            "latency_ms": 5,
            "limits": {"enabled": True, "test_global": 7},
            "faults": {"error_rate": 0},
        },
    ).json()
    assert config["latency_ms"] == 5
    assert config["limits"]["test_global"] == 7
    assert sandbox.limits.enabled is True
    assert sandbox.latency_ms == 5
    raw(
        "POST",
        "/_sandbox/faults",
        json={"method": "GET", "path": "/v1/customers", "count": 1, "status": 502},
    )
    assert raw("GET", "/v1/customers").status_code == 502
    bad = raw("POST", "/_sandbox/config", json={"limits": {"nonsense": 1}})
    assert bad.status_code == 400
    assert "nonsense" in bad.json()["error"]["message"]
    assert raw("GET", "/_sandbox/nowhere").status_code == 404


def test_card_numbers_and_cvcs_stay_out_of_the_log(raw: Raw, sandbox: SandboxServer) -> None:
    data = {
        "type": "card",
        "card[number]": "4242424242424242",
        "card[exp_month]": "1",
        "card[exp_year]": "2040",
        "card[cvc]": "314",
    }
    assert raw("POST", "/v1/payment_methods", data=data).status_code == 200
    card = sandbox.request_log.entries()[-1].params["card"]
    assert card["number"] == "************4242"
    assert card["cvc"] == "***"
    assert card["exp_year"] == "2040"
