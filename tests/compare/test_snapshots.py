from __future__ import annotations

import pandas as pd
import pytest

from reconcile.rules.snapshots import (
    STRING_DTYPE,
    USER_COLUMNS,
    customers_frame,
    empty_customers,
    empty_users,
    normalize_users,
)


def _record(customer_id: str, invoice_settings: object, **extra: object) -> dict[str, object]:
    record: dict[str, object] = {
        "id": customer_id,
        "created": 1_700_000_000,
        "email": "a@example.com",
        "name": "Zoë",
        "livemode": True,
        "metadata": {"user_id": "42", "plan": "pro"},
        "invoice_settings": invoice_settings,
    }
    record.update(extra)
    return record


def test_customers_frame_columns_and_dtypes() -> None:
    frame = customers_frame(
        [_record("cus_1", {"default_payment_method": None})], ["user_id", "env"]
    )
    assert list(frame.columns) == [
        "customer_id",
        "email",
        "name",
        "created",
        "livemode",
        "default_payment_method",
        "meta.user_id",
        "meta.env",
    ]
    assert frame["created"].dtype == "int64"
    assert frame["livemode"].dtype == bool
    for column in ("customer_id", "email", "name", "default_payment_method", "meta.user_id"):
        assert frame[column].dtype == STRING_DTYPE
    row = frame.iloc[0]
    assert row["meta.user_id"] == "42"
    assert pd.isna(row["meta.env"])
    assert pd.isna(row["default_payment_method"])
    assert bool(row["livemode"]) is True


def test_default_payment_method_as_id_expanded_object_or_top_level() -> None:
    frame = customers_frame(
        [
            _record("cus_1", {"default_payment_method": "pm_1"}),
            _record(
                "cus_2", {"default_payment_method": {"id": "pm_2", "object": "payment_method"}}
            ),
            _record("cus_3", None, default_payment_method="pm_3"),
            _record("cus_4", {}),
        ],
        [],
    )
    assert frame["default_payment_method"].tolist()[:3] == ["pm_1", "pm_2", "pm_3"]
    assert pd.isna(frame["default_payment_method"].iloc[3])


def test_missing_fields_are_absent_not_text() -> None:
    frame = customers_frame([{"id": "cus_1", "created": 5, "metadata": None}], ["plan"])
    assert frame["email"].isna().all()
    assert frame["meta.plan"].isna().all()


def test_empty_snapshots() -> None:
    assert len(empty_customers(["plan"])) == 0
    assert "meta.plan" in empty_customers(["plan"]).columns
    users = empty_users(["plan"])
    assert list(users.columns) == [*USER_COLUMNS, "meta.plan"]


def test_normalize_users_coerces_ids_and_blank_customer_ids() -> None:
    raw = pd.DataFrame(
        {
            "user_id": [1, 2, 3],
            "email": ["a@x", None, "c@x"],
            "customer_id": ["cus_1", "", "  "],
            "deleted": [False, None, True],
            "meta.plan": [5, None, "pro"],
        }
    )
    users = normalize_users(raw, ["plan"])
    assert list(users.columns) == [*USER_COLUMNS, "meta.plan"]
    assert users["user_id"].tolist() == ["1", "2", "3"]
    assert users["customer_id"].iloc[0] == "cus_1"
    assert users["customer_id"].iloc[1:].isna().all()
    assert users["deleted"].tolist() == [False, False, True]
    assert users["name"].isna().all()
    assert users["meta.plan"].iloc[0] == "5"
    assert users["user_id"].dtype == STRING_DTYPE


def test_normalize_users_needs_a_user_id() -> None:
    with pytest.raises(ValueError, match="user_id"):
        normalize_users(pd.DataFrame({"id": [1]}), [])
