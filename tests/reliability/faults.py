"""Fault profiles and the measurements the fault tests and `bench/fault_matrix.py` share."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sandbox.faults import FaultInjector
from sandbox.requestlog import RequestRecord
from sandbox.runner import SandboxServer

__all__ = [
    "PROFILES",
    "FaultProfile",
    "apply_profile",
    "clear_profile",
    "fault_counts",
    "findings_key",
    "successful_writes",
]

WRITE_METHODS = ("POST", "DELETE")


@dataclass(frozen=True)
class FaultProfile:
    name: str
    rate_limit_rate: float = 0.0  # injected 429s
    error_rate: float = 0.0  # injected 500s
    drop_rate: float = 0.0  # connections closed without an answer
    latency_ms: float = 0.0
    jitter_ms: float = 0.0  # spikes: 0..jitter_ms extra per request


PROFILES: dict[str, FaultProfile] = {
    p.name: p
    for p in (
        FaultProfile("none"),
        FaultProfile("429-storm", rate_limit_rate=0.5),
        FaultProfile("5xx-5pct", error_rate=0.05),
        FaultProfile("drops-2pct", drop_rate=0.02),
        FaultProfile("latency-spikes", latency_ms=5, jitter_ms=120),
        FaultProfile("mixed", rate_limit_rate=0.25, error_rate=0.05, drop_rate=0.02, jitter_ms=40),
    )
}


def apply_profile(sandbox: SandboxServer, profile: FaultProfile, seed: int = 11) -> None:
    """A freshly seeded injector, so a profile draws the same faults in every run."""
    sandbox.state.faults = FaultInjector(
        profile.error_rate, profile.rate_limit_rate, profile.drop_rate, seed=seed
    )
    sandbox.latency_ms = profile.latency_ms
    sandbox.jitter_ms = profile.jitter_ms


def clear_profile(sandbox: SandboxServer) -> None:
    sandbox.state.faults = FaultInjector()
    sandbox.latency_ms = 0.0
    sandbox.jitter_ms = 0.0


def fault_counts(entries: Iterable[RequestRecord]) -> dict[str, int]:
    """What the sandbox refused: 429s, 5xx answers, dropped connections (status 0)."""
    statuses = Counter(e.status for e in entries)
    return {
        "rate_limited": statuses[429],
        "server_errors": sum(n for s, n in statuses.items() if s >= 500),
        "dropped": statuses[0],
    }


def successful_writes(entries: Iterable[RequestRecord]) -> list[tuple[str, str, str | None]]:
    """(method, path, idempotency key) of every write the sandbox carried out."""
    return [
        (e.method, e.path, e.idempotency_key)
        for e in entries
        if e.method in WRITE_METHODS and 200 <= e.status < 300
    ]


def findings_key(findings: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Findings as sorted plain rows, to compare runs regardless of order."""
    return sorted(tuple(str(v) for v in row) for row in findings.itertuples(index=False))
