"""Scoring findings against a seeded account's ground truth: precision and recall by kind."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["FindingKey", "Score", "score_findings"]

FindingKey = tuple[str, str, str, str]
_KEY_FIELDS = ("kind", "customer_id", "user_id", "field")


def _key(row: Mapping[str, Any]) -> FindingKey:
    return tuple(str(row.get(name) or "") for name in _KEY_FIELDS)  # type: ignore[return-value]


@dataclass(frozen=True)
class Score:
    expected: int
    reported: int
    missed: list[FindingKey] = field(default_factory=list)
    unexpected: list[FindingKey] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return 1.0 if self.expected == 0 else 1 - len(self.missed) / self.expected

    @property
    def precision(self) -> float:
        return 1.0 if self.reported == 0 else 1 - len(self.unexpected) / self.reported


def score_findings(
    findings: pd.DataFrame, ground_truth: Iterable[Mapping[str, Any]], kinds: Iterable[str]
) -> Score:
    """Compare the findings of the given kinds with what was planted, row for row."""
    wanted = set(kinds)
    expected = {_key(row) for row in ground_truth if row["kind"] in wanted}
    subset = findings[findings["kind"].isin(wanted)]
    reported_list: list[FindingKey] = [
        tuple(str(value or "") for value in values)  # type: ignore[misc]
        for values in subset[list(_KEY_FIELDS)].itertuples(index=False, name=None)
    ]
    reported = set(reported_list)
    return Score(
        expected=len(expected),
        reported=len(reported_list),
        missed=sorted(expected - reported),
        unexpected=sorted(reported - expected) + _repeats(reported_list),
    )


def _repeats(keys: list[FindingKey]) -> list[FindingKey]:
    seen: set[FindingKey] = set()
    repeated = []
    for key in keys:
        if key in seen:
            repeated.append(key)
        seen.add(key)
    return repeated
