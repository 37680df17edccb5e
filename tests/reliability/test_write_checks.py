"""The outside checks of the write jobs (write_checks.py) find what they are meant to find.

The kill campaign and the convergence property test report zeros when all is well; these
cases show each counter does fire on the failure it names.
"""

from __future__ import annotations

from typing import Any

from tests.reliability.write_checks import (
    AuditRow,
    CustomerView,
    double_writes,
    lost_writes,
    successful_writes,
    unaudited_writes,
)


def record(method: str, path: str, status: int = 200, key: str | None = None,
           params: dict[str, Any] | None = None, **flags: bool) -> dict[str, Any]:  # fmt: skip
    return {"method": method, "path": path, "status": status, "idempotency_key": key,
            "params": params or {}, **flags}  # fmt: skip


def row(action: str, after: dict[str, Any], *, key: str = "", customer: str = "",
        user: str = "", outcome: str = "applied") -> AuditRow:  # fmt: skip
    return AuditRow(run_id="r1", job="job", action=action, customer_id=customer, user_id=user,
                    before={}, after=after, idempotency_key=key, outcome=outcome)  # fmt: skip


def test_replays_reads_and_refused_writes_are_not_writes() -> None:
    records = [
        record("GET", "/v1/customers"),
        record("POST", "/v1/customers/cus_1", key="k1", params={"metadata": {"plan": "pro"}}),
        record("POST", "/v1/customers/cus_1", key="k1", params={"metadata": {"plan": "pro"}}),
        record("POST", "/v1/customers/cus_2", status=500, key="k2"),
        record("DELETE", "/v1/customers/cus_3", status=404),
    ]
    assert [(w.path, w.idempotency_key) for w in successful_writes(records)] == [
        ("/v1/customers/cus_1", "k1")
    ]


def test_the_sandbox_flags_decide_when_present() -> None:
    records = [
        # Applied, then the answer was dropped: a write all the same.
        record("POST", "/v1/customers/cus_1", status=0, key="k1", applied=True, replayed=False),
        record("POST", "/v1/customers/cus_1", key="k1", applied=False, replayed=True),
    ]
    assert [w.status for w in successful_writes(records)] == [0]


def test_writes_without_an_audit_row_are_unaudited() -> None:
    writes = successful_writes(
        [
            record("POST", "/v1/customers", key="k-create", params={"email": "a@example.com"}),
            record("POST", "/v1/customers/cus_1", key="k-update"),
            record("DELETE", "/v1/customers/cus_2"),  # no key on the wire: matched by customer
            record("DELETE", "/v1/customers/cus_3"),
        ]
    )
    audit = [
        row("create_customer_and_link", {}, key="k-create", outcome="started"),
        row("delete_customer", {}, customer="cus_2"),
    ]
    assert [w.path for w in unaudited_writes(writes, audit)] == [
        "/v1/customers/cus_1",
        "/v1/customers/cus_3",
    ]
    # A run that was not killed must have finished its rows: `started` does not count.
    assert [w.path for w in unaudited_writes(writes, audit, applied_only=True)] == [
        "/v1/customers",
        "/v1/customers/cus_1",
        "/v1/customers/cus_3",
    ]


def test_the_same_change_carried_out_twice_is_a_double() -> None:
    plan_pro = {"metadata": {"plan": "pro"}}
    writes = successful_writes(
        [
            record("POST", "/v1/customers/cus_1", key="a", params=plan_pro),
            record("POST", "/v1/customers/cus_1", key="b", params=plan_pro),
            record("POST", "/v1/customers/cus_2", key="c", params=plan_pro),
            record("POST", "/v1/customers", key="d", params={"metadata": {"user_id": "7"}}),
            record("POST", "/v1/customers", key="e", params={"metadata": {"user_id": "7"}}),
            record("POST", "/v1/customers", key="f", params={"metadata": {"user_id": "8"}}),
            record("DELETE", "/v1/customers/cus_9"),
            record("DELETE", "/v1/customers/cus_9"),
        ]
    )
    found = {d.what: d.times for d in double_writes(writes)}
    assert found == {
        "customer created for user 7": 2,
        "DELETE of cus_9": 2,
        'metadata.plan="pro" written to cus_1': 2,
    }


def test_an_applied_row_stripe_does_not_hold_is_lost() -> None:
    customers = {
        "cus_1": CustomerView(metadata={"plan": "free"}),
        "cus_2": CustomerView(metadata={"plan": "pro"}, default_payment_method="pm_1"),
        "cus_gone": CustomerView(deleted=True),
        "cus_kept": CustomerView(),
    }
    links = {"1": "cus_1", "2": "cus_gone", "3": None, "4": "cus_kept"}
    audit = [
        row("update_customer", {"metadata": {"plan": "pro"}}, customer="cus_1"),  # replayed
        row("update_customer", {"metadata": {"plan": "pro", "old": None}}, customer="cus_2"),
        row("set_default_payment_method", {"default_payment_method": "pm_1"}, customer="cus_2"),
        row("create_customer_and_link", {"customer_id": "cus_gone", "linked": True}, user="2"),
        row("link_user", {"customer_id": "cus_1", "linked": True}, customer="cus_1", user="3"),
        row(
            "delete_customer",
            {"customer_deleted": True, "link_cleared": True},
            customer="cus_kept",
            user="4",
        ),
        row("delete_customer", {"deleted": True}, customer="cus_gone"),
        row("update_customer", {"metadata": {"plan": "x"}}, customer="cus_1", outcome="failed"),
    ]
    lost = lost_writes(audit, customers.get, links.get)
    assert len(lost) == 4, lost
    assert "metadata.plan is 'free', the audit says 'pro'" in lost[0]
    assert "cus_gone does not exist" in lost[1]
    assert "user 3 links None, not cus_1" in lost[2]
    assert "cus_kept still exists" in lost[3]
    assert "user 4 still links cus_kept" in lost[3]
