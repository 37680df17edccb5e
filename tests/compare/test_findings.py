from __future__ import annotations

import math

import pandas as pd
import pytest

from reconcile.rules.findings import (
    FINDING_COLUMNS,
    SEVERITY_BY_KIND,
    STRING_DTYPE,
    FindingKind,
    concat_findings,
    empty_findings,
    findings_from_columns,
    insert_kind,
    make_findings,
)


def test_columns_are_the_contract_in_order() -> None:
    assert FINDING_COLUMNS == (
        "kind",
        "severity",
        "customer_id",
        "user_id",
        "email",
        "field",
        "stripe_value",
        "local_value",
        "related_ids",
        "detail",
        "suggested_action",
    )


def test_every_design_kind_has_a_severity() -> None:
    assert {k.value for k in FindingKind} == {
        "duplicate_user_id",
        "duplicate_email",
        "duplicate_link",
        "orphan_customer",
        "missing_customer",
        "unlinked_user",
        "stale_metadata",
        "deleted_user_customer",
        "card_expiring",
        "card_expired",
        "missing_default_payment_method",
        "duplicate_card",
    }
    assert set(SEVERITY_BY_KIND) == set(FindingKind)
    assert {s.value for s in SEVERITY_BY_KIND.values()} <= {"info", "warning", "error"}


def test_empty_findings_has_contract_columns_and_string_dtype() -> None:
    frame = empty_findings()
    assert tuple(frame.columns) == FINDING_COLUMNS
    assert len(frame) == 0
    assert all(dtype == STRING_DTYPE for dtype in frame.dtypes)


def test_make_findings_turns_absent_values_into_empty_strings() -> None:
    frame = make_findings(
        [
            {"kind": "orphan_customer", "customer_id": "cus_1", "email": None, "user_id": math.nan},
            {"kind": "missing_customer", "user_id": 7, "stripe_value": pd.NA},
        ]
    )
    assert tuple(frame.columns) == FINDING_COLUMNS
    assert all(dtype == STRING_DTYPE for dtype in frame.dtypes)
    assert frame.to_dict("records")[0]["email"] == ""
    assert frame.to_dict("records")[0]["user_id"] == ""
    assert frame.to_dict("records")[1]["user_id"] == "7"
    assert frame["severity"].tolist() == ["warning", "error"]
    text = frame.to_csv(index=False)
    assert "None" not in text
    assert "nan" not in text.lower()
    assert "<NA>" not in text


def test_make_findings_keeps_a_given_severity_and_refuses_unknown_columns() -> None:
    frame = make_findings([{"kind": "orphan_customer", "severity": "error"}])
    assert frame.loc[0, "severity"] == "error"
    with pytest.raises(ValueError, match="unknown columns"):
        make_findings([{"kind": "orphan_customer", "customer": "cus_1"}])
    with pytest.raises(ValueError, match="not_a_kind"):
        make_findings([{"kind": "not_a_kind"}])


def test_make_findings_of_nothing_is_empty() -> None:
    assert make_findings([]).equals(empty_findings())


def test_findings_from_columns_broadcasts_scalars() -> None:
    ids = pd.Series(["cus_b", "cus_a"], index=[10, 20], dtype=STRING_DTYPE)
    frame = findings_from_columns(
        FindingKind.ORPHAN_CUSTOMER, 2, {"customer_id": ids, "detail": "x"}
    )
    assert frame["customer_id"].tolist() == ["cus_b", "cus_a"]
    assert frame["detail"].tolist() == ["x", "x"]
    assert frame["severity"].tolist() == ["warning", "warning"]
    assert frame["user_id"].tolist() == ["", ""]
    assert findings_from_columns(FindingKind.ORPHAN_CUSTOMER, 0, {}).equals(empty_findings())


def test_concat_sorts_deterministically_whatever_the_input_order() -> None:
    rows = [
        {"kind": "stale_metadata", "customer_id": "cus_2", "user_id": "1", "field": "name"},
        {"kind": "stale_metadata", "customer_id": "cus_2", "user_id": "1", "field": "email"},
        {"kind": "duplicate_link", "customer_id": "cus_9", "user_id": "3"},
        {"kind": "stale_metadata", "customer_id": "cus_1", "user_id": "2", "field": "name"},
    ]
    forward = concat_findings([make_findings(rows[:2]), make_findings(rows[2:])])
    backward = concat_findings([make_findings(list(reversed(rows)))])
    assert forward.equals(backward)
    assert list(zip(forward["kind"], forward["customer_id"], forward["field"], strict=True)) == [
        ("duplicate_link", "cus_9", ""),
        ("stale_metadata", "cus_1", "name"),
        ("stale_metadata", "cus_2", "email"),
        ("stale_metadata", "cus_2", "name"),
    ]
    assert forward.index.tolist() == [0, 1, 2, 3]


def test_concat_of_nothing_is_empty() -> None:
    assert concat_findings([]).equals(empty_findings())
    assert concat_findings([empty_findings(), empty_findings()]).equals(empty_findings())


@pytest.mark.parametrize("kind", ["deleted_user_customer", "missing_customer", "unlinked_user"])
def test_insert_kind_is_concat_without_sorting_again(kind: str) -> None:
    others = concat_findings(
        [
            make_findings([{"kind": "stale_metadata", "customer_id": "cus_2", "field": "name"}]),
            make_findings([{"kind": "duplicate_link", "customer_id": "cus_9", "user_id": "3"}]),
            make_findings([{"kind": "orphan_customer", "customer_id": "cus_1"}]),
        ]
    )
    block = concat_findings(
        [make_findings([{"kind": kind, "customer_id": c, "user_id": "1"} for c in ("b", "a")])]
    )
    inserted = insert_kind(others, block)
    assert inserted.equals(concat_findings([others, block]))
    assert inserted.index.tolist() == list(range(5))
    assert insert_kind(others, empty_findings()).equals(others)
    assert insert_kind(empty_findings(), block).equals(block)


def test_insert_kind_refuses_a_kind_already_there() -> None:
    others = make_findings([{"kind": "orphan_customer", "customer_id": "cus_1"}])
    with pytest.raises(ValueError, match="one kind absent"):
        insert_kind(others, make_findings([{"kind": "orphan_customer", "customer_id": "cus_2"}]))
