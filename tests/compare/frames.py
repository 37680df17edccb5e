"""Small hand-made snapshots for the rule tests."""

from __future__ import annotations

from typing import Any

import pandas as pd

from reconcile.rules.compare import CompareConfig
from reconcile.rules.snapshots import customers_frame, normalize_users

CONFIG = CompareConfig(metadata_keys=("plan",))
SCOPED = CompareConfig(metadata_keys=("plan",), scope={"env": "prod"})


def cus(
    customer_id: str,
    *,
    created: int = 1_600_000_000,
    email: str | None = None,
    name: str | None = None,
    **metadata: str,
) -> dict[str, Any]:
    """A customer record as the list endpoint returns it (only the fields compare reads)."""
    return {
        "id": customer_id,
        "object": "customer",
        "created": created,
        "email": email,
        "name": name,
        "livemode": False,
        "metadata": metadata,
        "invoice_settings": {"default_payment_method": None},
    }


def customers(*records: dict[str, Any]) -> pd.DataFrame:
    return customers_frame(records, ("user_id", "plan", "env"))


def user(
    user_id: int | str,
    *,
    email: str | None = None,
    name: str | None = None,
    customer_id: str | None = None,
    deleted: bool = False,
    plan: str | None = None,
) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "email": email,
        "name": name,
        "customer_id": customer_id,
        "deleted": deleted,
        "meta.plan": plan,
    }


def users(*records: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(
        list(records),
        columns=["user_id", "email", "name", "customer_id", "deleted", "meta.plan"],
    )
    return normalize_users(frame, ("plan",))


def keys(findings: pd.DataFrame) -> set[tuple[str, str, str, str]]:
    """The (kind, customer_id, user_id, field) of every row."""
    columns = ["kind", "customer_id", "user_id", "field"]
    return set(findings[columns].itertuples(index=False, name=None))
