"""Property-based tests of the comparison: random accounts, anomalies planted at random users.

A clean account (every user linked to its own customer, same email up to case and spaces,
same metadata) yields no finding; each planted anomaly is found with its kind, and
nothing else is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from reconcile.rules.compare import CompareConfig, compare_all
from reconcile.rules.snapshots import customers_frame, normalize_users

CONFIG = CompareConfig(metadata_keys=("plan",))
KINDS = (
    "stale_metadata",
    "orphan_customer",
    "unlinked_user",
    "missing_customer",
    "deleted_user_customer",
    "duplicate_email",
    "duplicate_user_id",
    "duplicate_link",
)
BASE = 1_600_000_000


@dataclass
class Account:
    customers: list[dict[str, Any]]
    users: list[dict[str, Any]]
    planted: set[tuple[str, str]]  # (kind, the id that names the finding)
    missing: dict[str, str]


def _customer(cid: str, created: int, email: str | None, **metadata: str) -> dict[str, Any]:
    return {"id": cid, "created": created, "email": email, "name": None, "livemode": False,
            "metadata": metadata, "invoice_settings": {"default_payment_method": None}}  # fmt: skip


def _user(user_id: str, email: str, customer_id: str | None, plan: str) -> dict[str, Any]:
    return {"user_id": user_id, "email": email, "name": None, "customer_id": customer_id,
            "deleted": False, "meta.plan": plan}  # fmt: skip


def _variant(text: str, mask: int) -> str:
    """The same email as Stripe may hold it: other letter case, stray spaces."""
    cased = "".join(c.upper() if mask >> (i % 30) & 1 else c for i, c in enumerate(text))
    return f" {cased} " if mask & 1 else cased


def build(n: int, masks: list[int], plants: dict[int, str], plans: list[str]) -> Account:
    customers = []
    users = []
    for i in range(n):
        email = f"user{i}@example.com"
        customers.append(
            _customer(
                f"cus_{i}", BASE + i, _variant(email, masks[i]), user_id=f"u{i}", plan=plans[i]
            )
        )
        users.append(_user(f"u{i}", email, f"cus_{i}", plans[i]))
    planted: set[tuple[str, str]] = set()
    missing: dict[str, str] = {}
    originals = list(customers)  # indices stay put while customers come and go
    for i, kind in plants.items():
        user, customer = users[i], originals[i]
        if kind == "stale_metadata":
            customer["metadata"]["plan"] = plans[i] + "-old"
            planted.add((kind, f"u{i}"))
        elif kind == "orphan_customer":
            customers.append(
                _customer(f"cus_orphan{i}", BASE + 10_000 + i, f"stranger{i}@example.net")
            )
            planted.add((kind, f"cus_orphan{i}"))
        elif kind == "unlinked_user":
            user["customer_id"] = None
            planted.add((kind, f"u{i}"))
        elif kind == "missing_customer":
            customers.remove(customer)
            user["customer_id"] = f"cus_gone{i}"
            missing[f"cus_gone{i}"] = "absent"
            planted.add((kind, f"cus_gone{i}"))
        elif kind == "deleted_user_customer":
            user["deleted"] = True
            planted.add((kind, f"cus_{i}"))
        elif kind == "duplicate_email":
            customers.append(_customer(f"cus_twin{i}", BASE + 20_000 + i, user["email"].upper()))
            planted.add((kind, f"cus_{i}"))
        elif kind == "duplicate_user_id":
            customers.append(_customer(f"cus_clone{i}", BASE + 30_000 + i, None, user_id=f"u{i}"))
            planted.add((kind, f"cus_{i}"))
        elif kind == "duplicate_link":
            users.append(_user(f"v{i}", f"other{i}@example.org", f"cus_{i}", plans[i]))
            planted.add((kind, f"cus_{i}"))
    return Account(customers, users, planted, missing)


def findings_of(account: Account) -> pd.DataFrame:
    customers = customers_frame(account.customers, ("user_id", "plan"))
    users = normalize_users(
        pd.DataFrame.from_records(
            account.users,
            columns=["user_id", "email", "name", "customer_id", "deleted", "meta.plan"],
        ),
        ("plan",),
    )
    return compare_all(customers, users, CONFIG, account.missing)


def named(row: pd.Series) -> tuple[str, str]:
    """The id a planted anomaly is named by: the user for user-side kinds, else the customer."""
    by_user = row["kind"] in ("stale_metadata", "unlinked_user")
    return str(row["kind"]), str(row["user_id"] if by_user else row["customer_id"])


@st.composite
def accounts(draw: st.DrawFn, max_plants: int = 8) -> Account:
    n = draw(st.integers(min_value=1, max_value=40))
    masks = draw(st.lists(st.integers(0, 2**30), min_size=n, max_size=n))
    plans = draw(
        st.lists(st.sampled_from(["free", "pro", "team", "Pro", "ü-plan"]), min_size=n, max_size=n)
    )
    where = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=min(n, max_plants)))
    plants = {i: draw(st.sampled_from(KINDS)) for i in where}
    return build(n, masks, plants, plans)


@settings(max_examples=50, deadline=None)
@given(accounts(max_plants=0))
def test_clean_accounts_yield_no_finding(account: Account) -> None:
    assert findings_of(account).empty


@settings(max_examples=50, deadline=None)
@given(accounts())
def test_every_planted_anomaly_is_found_with_its_kind_and_nothing_else(account: Account) -> None:
    findings = findings_of(account)
    found = {named(row) for _, row in findings.iterrows()}
    assert found == account.planted
    assert len(findings) == len(account.planted)
