"""Scoring card findings against a seeded account's card ground truth, card by card.

Card facts are per payment method (a customer can have two expired cards), so rows are
keyed by (kind, customer_id, payment method ids) rather than by the customer-side key.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from reconcile.rules.findings import CARD_KINDS
from sandbox.groundtruth import Score

if TYPE_CHECKING:
    from sandbox.seed import SeededAccount

__all__ = [
    "CardKey",
    "expected_card_keys",
    "score_card_findings",
    "score_seeded_run",
]

CardKey = tuple[str, str, str]
_PER_CARD = ("card_expiring", "card_expired")


def _truth_key(row: Mapping[str, Any]) -> CardKey:
    kind = str(row["kind"])
    if kind in _PER_CARD:
        ids = str(row["payment_method_id"])
    elif kind == "duplicate_card":
        ids = ";".join(sorted(row["payment_method_ids"]))
    else:
        ids = ""
    return (kind, str(row["customer_id"]), ids)


def expected_card_keys(
    card_ground_truth: Iterable[Mapping[str, Any]],
    *,
    all_cards: bool,
    default_payment_method_ids: Collection[str] = (),
    excluded_customer_ids: Collection[str] = (),
) -> set[CardKey]:
    """What a run should report: in the default scope only the default cards' expiry facts."""
    excluded = set(excluded_customer_ids)
    defaults = set(default_payment_method_ids)
    keys: set[CardKey] = set()
    for row in card_ground_truth:
        if row["customer_id"] in excluded:
            continue
        if not all_cards and (
            row["kind"] not in _PER_CARD or row["payment_method_id"] not in defaults
        ):
            continue
        keys.add(_truth_key(row))
    return keys


def score_card_findings(findings: pd.DataFrame, expected: set[CardKey]) -> Score:
    subset = findings[findings["kind"].isin(CARD_KINDS)]
    reported_list: list[CardKey] = []
    for kind, customer_id, related in subset[["kind", "customer_id", "related_ids"]].itertuples(
        index=False, name=None
    ):
        ids = "" if kind == "missing_default_payment_method" else str(related)
        reported_list.append((str(kind), str(customer_id), ids))
    reported = set(reported_list)
    repeats = len(reported_list) - len(reported)
    return Score(
        expected=len(expected),
        reported=len(reported_list),
        missed=[(k, c, i, "") for k, c, i in sorted(expected - reported)],
        unexpected=[(k, c, i, "") for k, c, i in sorted(reported - expected)]
        + [("repeated", "", "", "")] * repeats,
    )


def score_seeded_run(
    findings: pd.DataFrame, account: SeededAccount, *, all_cards: bool = False
) -> Score:
    """Score a card-expiry run over a seeded account (scope as in `GROUND_TRUTH_CONFIG`)."""
    defaults = {
        c["default_payment_method"] for c in account.customers if c["default_payment_method"]
    }
    expected = expected_card_keys(
        account.card_ground_truth,
        all_cards=all_cards,
        default_payment_method_ids=defaults,
        excluded_customer_ids=account.out_of_scope_customer_ids,
    )
    return score_card_findings(findings, expected)
