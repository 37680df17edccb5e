"""The pure parts: planners on small frames, idempotency keys, Stripe's metadata limits."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd

from reconcile.rules.findings import make_findings
from reconcile.rules.idempotency import idempotency_key, rekey, retry_key, unmet_params
from reconcile.rules.metadata import metadata_violations
from reconcile.rules.plans import (
    DedupeFacts,
    SyncOptions,
    card_is_expired,
    plan_dedupe,
    plan_default_payment_method,
    plan_sync_metadata,
    replan_sync_update,
)


def test_idempotency_keys_are_derived_from_the_data_and_the_intent() -> None:
    params = {"metadata": {"a": "1"}}
    key = idempotency_key("sync-metadata", "cus_1", "update_customer", params, intent="run1")
    assert key == idempotency_key(
        "sync-metadata", "cus_1", "update_customer", params, intent="run1"
    )
    assert key.startswith("stripe-reconcile:sync-metadata:update_customer:cus_1:run1:")
    assert key != idempotency_key(
        "sync-metadata", "cus_1", "update_customer", {"metadata": {"a": "2"}}, intent="run1"
    )
    assert key != idempotency_key(
        "sync-metadata", "cus_1", "update_customer", params, state={"a": "0"}, intent="run1"
    )
    # The same change decided by a later run (A -> B -> A) is a new write, with a new key.
    assert key != idempotency_key(
        "sync-metadata", "cus_1", "update_customer", params, intent="run3"
    )
    long_key = idempotency_key("link-users", "user:" + "9" * 400, "create", {}, intent="r" * 300)
    assert len(retry_key(long_key, 99)) <= 255
    assert long_key != idempotency_key(
        "link-users", "user:" + "9" * 400, "create", {}, intent="r" * 299
    )


def test_a_re_planned_write_keeps_its_intent_and_a_retry_gets_its_own_key() -> None:
    key = idempotency_key("sync-metadata", "cus_1", "update_customer", {"a": 1}, intent="run1")
    fresh = rekey(key, {"a": 2}, {"a": 0})
    assert fresh.startswith("stripe-reconcile:sync-metadata:update_customer:cus_1:run1:")
    assert fresh != key
    assert fresh == rekey(key, {"a": 2}, {"a": 0})
    assert retry_key(key, 1) == key + ":r1"


def test_unmet_params_reads_merged_metadata_nested_fields_and_expanded_ids() -> None:
    customer = {
        "email": "a@example.com",
        "metadata": {"plan": "pro"},
        "invoice_settings": {"default_payment_method": {"id": "pm_1"}},
    }
    assert unmet_params(customer, {"metadata": {"plan": "pro", "gone": ""}}) == []
    assert unmet_params(customer, {"metadata": {"plan": "free"}}) == ["metadata.plan"]
    assert unmet_params(customer, {"invoice_settings": {"default_payment_method": "pm_1"}}) == []
    assert unmet_params(customer, {"email": "b@example.com"}) == ["email"]


def test_sync_replan_recomputes_from_the_fresh_customer_and_user_row() -> None:
    planned = {"metadata": {"plan": "pro"}}
    user = {"user_id": "1", "customer_id": "cus_1", "deleted": False, "meta.plan": "pro"}
    customer = {"id": "cus_1", "metadata": {"plan": "free"}}
    same = replan_sync_update(planned, customer, user, SyncOptions())
    assert (same.params, same.before, same.skip) == (planned, {"metadata": {"plan": "free"}}, "")
    # Someone set it meanwhile: nothing left to write.
    done = replan_sync_update(
        planned, {**customer, "metadata": {"plan": "pro"}}, user, SyncOptions()
    )
    assert (done.params, done.skip) == ({}, "")
    # The user's plan changed meanwhile: the fresh row wins, against the fresh customer.
    moved = replan_sync_update(
        planned,
        {**customer, "metadata": {"plan": "team"}},
        {**user, "meta.plan": "free"},
        SyncOptions(),
    )
    assert (moved.params, moved.before) == (
        {"metadata": {"plan": "free"}},
        {"metadata": {"plan": "team"}},
    )
    assert (
        "deleted"
        in replan_sync_update(planned, {"id": "cus_1", "deleted": True}, user, SyncOptions()).skip
    )
    assert (
        "soft-deleted"
        in replan_sync_update(planned, customer, {**user, "deleted": True}, SyncOptions()).skip
    )
    assert replan_sync_update(planned, customer, None, SyncOptions()).skip


def test_sync_replan_writes_the_user_id_key_from_the_user_id_not_a_column() -> None:
    # A customer linked by email has no metadata user id yet: the key holds the user's id
    # (found by the property test: the re-plan read a `meta.user_id` column and wrote nothing).
    planned = {"metadata": {"uid": "6"}}
    user = {"user_id": "6", "customer_id": "cus_6", "deleted": False}
    customer = {"id": "cus_6", "metadata": {}}
    fresh = replan_sync_update(planned, customer, user, SyncOptions(user_id_metadata_key="uid"))
    assert (fresh.params, fresh.before) == ({"metadata": {"uid": "6"}}, {"metadata": {"uid": None}})


def test_metadata_violations_name_each_broken_rule() -> None:
    assert metadata_violations({"plan": "pro"}) == []
    problems = metadata_violations({"k" * 41: "v", "a[b]": "v", "n": 5, "long": "x" * 501})
    assert len(problems) == 4
    full = {f"k{i}": "v" for i in range(50)}
    assert metadata_violations({"new": "v"}, full) == ["metadata would have 51 keys, more than 50"]
    assert metadata_violations({"k0": "", "new": "v"}, full) == []  # one deleted, one added


def _stale(customer: str, user: str, field: str, stripe: str, local: str) -> dict[str, str]:
    return {
        "kind": "stale_metadata",
        "customer_id": customer,
        "user_id": user,
        "field": field,
        "stripe_value": stripe,
        "local_value": local,
    }


def test_sync_merges_a_customers_changes_into_one_update_and_respects_options() -> None:
    findings = make_findings(
        [
            _stale("cus_1", "1", "metadata.plan", "free", "pro"),
            _stale("cus_1", "1", "metadata.team", "a", ""),
            _stale("cus_1", "1", "email", "old@example.com", "new@example.com"),
        ]
    )
    plan = plan_sync_metadata(findings, {}, SyncOptions(sync_email=True), intent="run1")
    assert list(plan["action"]) == ["update_customer"]
    assert json.loads(plan["params"][0]) == {
        "email": "new@example.com",
        "metadata": {"plan": "pro", "team": ""},
    }
    kept = plan_sync_metadata(findings, {}, SyncOptions(delete_when_null=False), intent="run1")
    assert json.loads(kept["params"][0]) == {"metadata": {"plan": "pro"}}


def test_dedupe_canonical_is_linked_then_busy_then_oldest() -> None:
    findings = make_findings(
        [
            {
                "kind": "duplicate_email",
                "customer_id": "cus_old",
                "related_ids": "cus_busy;cus_linked",
            }
        ]
    )
    facts = pd.DataFrame(
        {
            "customer_id": ["cus_old", "cus_busy", "cus_linked"],
            "created": [1, 2, 3],
            "linked": [False, False, True],
            "payment_methods": [0, 1, 0],
            "subscriptions": [0, 0, 0],
            "balance": [0, 0, 0],
            "duplicate_of": [None, None, None],
        }
    )
    plan = plan_dedupe(findings, DedupeFacts(facts), intent="run1")
    rows = {row.customer_id: (row.action, json.loads(str(row.params))) for row in plan.itertuples()}
    assert rows == {
        "cus_old": ("delete_customer", {}),
        "cus_busy": ("tag_duplicate", {"metadata": {"duplicate_of": "cus_linked"}}),
    }
    facts.loc[1, "duplicate_of"] = "cus_linked"
    facts.loc[0, "balance"] = -500  # a credit balance is not safe to delete either
    again = plan_dedupe(findings, DedupeFacts(facts), intent="run1")
    assert list(zip(again["customer_id"], again["action"], strict=True)) == [
        ("cus_old", "tag_duplicate")
    ]


def test_default_card_is_the_newest_valid_through_its_expiry_month() -> None:
    assert not card_is_expired(6, 2026, date(2026, 6, 30))
    assert card_is_expired(6, 2026, date(2026, 7, 1))
    customers = pd.DataFrame(
        {"customer_id": ["cus_a", "cus_b"], "default_payment_method": [pd.NA, pd.NA]}
    )
    cards = pd.DataFrame(
        {
            "customer_id": ["cus_a", "cus_a", "cus_b"],
            "payment_method_id": ["pm_old", "pm_new_expired", "pm_b"],
            "created": [1, 2, 3],
            "exp_month": [12, 5, 1],
            "exp_year": [2027, 2026, 2026],
        }
    )
    plan = plan_default_payment_method(customers, cards, date(2026, 6, 1), intent="run1")
    assert list(zip(plan["customer_id"], plan["action"], strict=True)) == [
        ("cus_a", "set_default_payment_method"),
        ("cus_b", "skip"),
    ]
    assert json.loads(plan["params"][0]) == {
        "invoice_settings": {"default_payment_method": "pm_old"}
    }
    earlier = plan_default_payment_method(customers, cards, date(2026, 5, 31), intent="run1")
    assert json.loads(earlier["params"][0])["invoice_settings"]["default_payment_method"] == (
        "pm_new_expired"
    )
