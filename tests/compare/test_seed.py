"""The seeded account: deterministic, realistic, its ground truth exactly what compare finds."""

from __future__ import annotations

import calendar
import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from reconcile.rules import findings
from reconcile.rules.compare import CompareConfig, compare_all, missing_customer_ids
from reconcile.rules.findings import FindingKind
from reconcile.rules.snapshots import customers_frame
from sandbox.seed import (
    GROUND_TRUTH_CONFIG,
    MIN_CUSTOMERS,
    SeededAccount,
    generate_account,
    listed_customers,
    users_snapshot,
    write_ground_truth,
    write_users_db,
)

NOW = 1_760_000_000  # 2025-10-09, mid-month: both card windows exist
CUSTOMER_KINDS = set(findings.CUSTOMER_KINDS)
CARD_KINDS = set(findings.CARD_KINDS)


def _config(scope: dict[str, str] | None = None) -> CompareConfig:
    return CompareConfig(
        user_id_metadata_key=GROUND_TRUTH_CONFIG["user_id_metadata_key"],
        metadata_keys=tuple(GROUND_TRUTH_CONFIG["metadata_keys"]),
        scope=GROUND_TRUTH_CONFIG["scope"] if scope is None else scope,
    )


def _findings(account: SeededAccount, config: CompareConfig) -> pd.DataFrame:
    """What the reconcile job would compute, minus the network: listing, users, lookups."""
    listed = listed_customers(account)
    customers = customers_frame(listed, config.customer_metadata_keys())
    users = users_snapshot(account)
    deleted = set(account.deleted_customer_ids)
    live = {c["id"] for c in account.live_customers}
    causes: dict[str, Any] = {
        cid: "deleted" if cid in deleted else "other_mode" if cid in live else "absent"
        for cid in missing_customer_ids(customers, users)
    }
    return compare_all(customers, users, config, causes)


def _keys(rows: Any) -> set[tuple[str, str, str, str]]:
    return {(r["kind"], r["customer_id"], r["user_id"], r["field"]) for r in rows}


@pytest.fixture(scope="module")
def account() -> SeededAccount:
    return generate_account(3000, seed=11, now=NOW)


def test_same_seed_same_account_other_seed_other_account() -> None:
    first = generate_account(400, seed=3, now=NOW)
    again = generate_account(400, seed=3, now=NOW)
    other = generate_account(400, seed=4, now=NOW)
    assert first == again
    assert first.customers != other.customers
    assert first.ground_truth != other.ground_truth


def test_shapes_and_ids_look_like_stripe(account: SeededAccount) -> None:
    assert len(account.customers) == 3000
    ids = [c["id"] for c in account.customers] + [c["id"] for c in account.live_customers]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"cus_[A-Za-z0-9]{14}", i) for i in ids)
    pm_ids = [pm["id"] for pm in account.payment_methods]
    assert len(set(pm_ids)) == len(pm_ids)
    assert all(re.fullmatch(r"pm_[A-Za-z0-9]{24}", i) for i in pm_ids)
    customer_keys = {
        "id", "created", "email", "name", "phone", "description", "metadata",
        "default_payment_method",
    }  # fmt: skip
    assert all(set(c) == customer_keys for c in account.customers)
    assert all(set(u) == {"id", "email", "name", "plan", "stripe_customer_id", "deleted_at"}
               for u in account.users)  # fmt: skip
    card_keys = {"brand", "last4", "exp_month", "exp_year", "fingerprint", "funding"}
    assert all(set(pm["card"]) == card_keys for pm in account.payment_methods)
    by_id = {c["id"]: c for c in account.customers}
    assert all(pm["customer"] in by_id for pm in account.payment_methods)
    assert all(by_id[pm["customer"]]["created"] <= pm["created"] < NOW
               for pm in account.payment_methods)  # fmt: skip


def test_realistic_spread(account: SeededAccount) -> None:
    created = [c["created"] for c in account.customers]
    assert max(created) < NOW
    assert NOW - min(created) > 3 * 365 * 86_400  # several years of sign-ups
    names = " ".join(c["name"] or "" for c in account.customers)
    assert any(ord(ch) > 127 for ch in names)
    with_meta = [c for c in account.customers if c["metadata"].get("user_id")]
    assert len(with_meta) > 0.9 * len(account.customers)
    envs = Counter(c["metadata"].get("env") for c in account.customers)
    assert envs["prod"] > 0.9 * len(account.customers)
    assert envs["staging"] > 0
    deleted_users = [u for u in account.users if u["deleted_at"]]
    assert deleted_users
    assert all(datetime.fromisoformat(u["deleted_at"]).tzinfo for u in deleted_users)


@pytest.mark.parametrize(("n_customers", "seed"), [(MIN_CUSTOMERS, 0), (2000, 1), (3000, 2)])
def test_ground_truth_is_exactly_what_compare_reports(n_customers: int, seed: int) -> None:
    account = generate_account(n_customers, seed=seed, now=NOW)
    findings = _findings(account, _config())
    reported = _keys(findings.to_dict("records"))
    expected = _keys(account.ground_truth)
    assert len(findings) == len(reported), "a finding is reported twice"
    assert reported - expected == set(), "precision below 100%"
    assert expected - reported == set(), "recall below 100%"
    assert {k for k, *_ in expected} == CUSTOMER_KINDS  # every kind planted, even at the minimum


def test_missing_customer_causes_match_the_ground_truth(account: SeededAccount) -> None:
    findings = _findings(account, _config())
    missing = findings[findings["kind"] == "missing_customer"]
    got = dict(zip(missing["user_id"], missing["stripe_value"], strict=True))
    want = {r["user_id"]: r["cause"] for r in account.ground_truth
            if r["kind"] == "missing_customer"}  # fmt: skip
    assert got == want
    assert set(want.values()) == {"deleted", "other_mode", "absent"}


def test_out_of_scope_customers_would_be_reported_without_the_scope(
    account: SeededAccount,
) -> None:
    outside = set(account.out_of_scope_customer_ids)
    assert outside
    scoped = _findings(account, _config())
    mentioned = set(scoped["customer_id"]) | {
        i for ids in scoped["related_ids"] for i in ids.split(";") if i
    }
    assert mentioned.isdisjoint(outside)
    unscoped = _findings(account, _config(scope={}))
    extra = _keys(unscoped.to_dict("records")) - _keys(scoped.to_dict("records"))
    extra_kinds = {kind for kind, *_ in extra}
    assert {"orphan_customer", "unlinked_user", "deleted_user_customer"} <= extra_kinds
    assert "duplicate_user_id" in set(unscoped["kind"])


def test_anomaly_counts_grow_with_the_account() -> None:
    small = Counter(
        r["kind"] for r in generate_account(MIN_CUSTOMERS, seed=5, now=NOW).ground_truth
    )
    large = Counter(r["kind"] for r in generate_account(5000, seed=5, now=NOW).ground_truth)
    for kind in CUSTOMER_KINDS:
        assert large[kind] > small[kind] >= 1


def test_too_small_an_account_is_refused() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_CUSTOMERS}"):
        generate_account(10, now=NOW)


# --- card facts ----------------------------------------------------------------------------


def _last_valid_day(exp_year: int, exp_month: int) -> datetime:
    last = calendar.monthrange(exp_year, exp_month)[1]
    return datetime(exp_year, exp_month, last, 23, 59, 59, tzinfo=UTC)


def test_card_ground_truth_follows_the_expiry_rule(account: SeededAccount) -> None:
    now = datetime.fromtimestamp(NOW, UTC)
    expected: set[tuple[str, str]] = set()
    for pm in account.payment_methods:
        valid_through = _last_valid_day(pm["card"]["exp_year"], pm["card"]["exp_month"])
        if valid_through < now:
            expected.add(("card_expired", pm["id"]))
        elif valid_through < now + timedelta(days=30):
            expected.add(("card_expiring", pm["id"]))
    truth = {(r["kind"], r["payment_method_id"]) for r in account.card_ground_truth
             if r["kind"] in ("card_expired", "card_expiring")}  # fmt: skip
    assert truth == expected
    kinds = Counter(kind for kind, _ in truth)
    assert kinds["card_expired"] > 0
    assert kinds["card_expiring"] > 0
    assert len(truth) < 0.25 * len(account.payment_methods)  # most cards are fine


def test_card_ground_truth_defaults_and_duplicates(account: SeededAccount) -> None:
    cards_of: dict[str, list[dict[str, Any]]] = {}
    for pm in account.payment_methods:
        cards_of.setdefault(pm["customer"], []).append(pm)
    no_default = {c["id"] for c in account.customers
                  if c["id"] in cards_of and c["default_payment_method"] is None}  # fmt: skip
    duplicated = {
        cid for cid, pms in cards_of.items()
        if max(Counter(pm["card"]["fingerprint"] for pm in pms).values()) > 1
    }  # fmt: skip
    truth = Counter((r["kind"], r["customer_id"]) for r in account.card_ground_truth)
    assert {cid for kind, cid in truth if kind == "missing_default_payment_method"} == no_default
    assert {cid for kind, cid in truth if kind == "duplicate_card"} == duplicated
    assert no_default
    assert duplicated
    for customer in account.customers:
        default = customer["default_payment_method"]
        if default is not None:
            assert default in {pm["id"] for pm in cards_of[customer["id"]]}
    # the same card at two customers (a family card) is not a duplicate
    owners: Counter[str] = Counter()
    for pms in cards_of.values():
        owners.update({pm["card"]["fingerprint"] for pm in pms})
    assert any(count > 1 for count in owners.values())
    assert {kind for kind, _ in truth} == CARD_KINDS
    assert not any(r["kind"] in CUSTOMER_KINDS for r in account.card_ground_truth)
    assert FindingKind.DUPLICATE_CARD.value in CARD_KINDS


# --- writers -------------------------------------------------------------------------------


def test_write_users_db_round_trips(database_url: str) -> None:
    account = generate_account(MIN_CUSTOMERS, seed=9, now=NOW)
    write_users_db(account, database_url)
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("select * from users order by id")).mappings().all()
    finally:
        engine.dispose()
    assert len(rows) == len(account.users)
    by_id = {u["id"]: u for u in account.users}
    for row in rows:
        source = by_id[row["id"]]
        assert row["email"] == source["email"]
        assert row["name"] == source["name"]
        assert row["plan"] == source["plan"]
        assert row["stripe_customer_id"] == source["stripe_customer_id"]
        assert (row["deleted_at"] is None) == (source["deleted_at"] is None)


def test_write_users_db_accepts_a_plain_path(tmp_path: Path) -> None:
    account = generate_account(MIN_CUSTOMERS, seed=9, now=NOW)
    path = tmp_path / "users.db"
    write_users_db(account, str(path))
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        count = conn.execute(sa.text("select count(*) from users")).scalar_one()
    engine.dispose()
    assert count == len(account.users)


def test_write_ground_truth(tmp_path: Path, account: SeededAccount) -> None:
    path = tmp_path / "truth.json"
    write_ground_truth(account, path)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["seed"] == 11
    assert document["now"] == NOW
    assert document["assumes"]["scope"] == {"env": "prod"}
    assert document["assumes"]["metadata_keys"] == ["plan"]
    assert document["findings"] == account.ground_truth
    assert document["cards"] == account.card_ground_truth
    assert document["deleted_customer_ids"] == account.deleted_customer_ids
    assert not list(tmp_path.glob("*.tmp"))
