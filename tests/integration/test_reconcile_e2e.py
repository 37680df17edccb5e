"""The reconcile job end to end: sandbox over HTTP, real databases, real report files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from jobs.reconcile_job import JOB
from jobs.runner import execute_job
from reconcile.rules.findings import CUSTOMER_KINDS, FINDING_COLUMNS
from sandbox.groundtruth import score_findings
from sandbox.runner import SandboxServer
from tests.seeded import SeededWorld, build_world


@pytest.mark.parametrize("seed", [1, 2])
def test_every_planted_anomaly_is_found_and_nothing_else(
    sandbox_server: SandboxServer, tmp_path: Path, database_url: str, seed: int
) -> None:
    world = build_world(sandbox_server, tmp_path, database_url, seed=seed)
    outcome = execute_job(JOB, world.settings)
    score = score_findings(outcome.findings, world.account.ground_truth, CUSTOMER_KINDS)
    assert score.missed == []
    assert score.unexpected == []
    assert score.expected > 0
    planted_kinds = {row["kind"] for row in world.account.ground_truth}
    assert set(CUSTOMER_KINDS) <= planted_kinds
    assert outcome.exit_code == 0


def test_run_folder_holds_the_contract(world: SeededWorld) -> None:
    outcome = execute_job(JOB, world.settings)
    run_dir = outcome.run_dir
    assert run_dir.parent == world.settings.reports.out / "reconcile"
    csv = pd.read_csv(run_dir / "findings.csv", dtype=str, keep_default_na=False)
    parquet = pd.read_parquet(run_dir / "findings.parquet")
    assert tuple(csv.columns) == FINDING_COLUMNS
    assert tuple(parquet.columns) == FINDING_COLUMNS
    assert len(csv) == len(parquet) == len(outcome.findings)
    assert not (csv == "None").any().any()
    for kind in set(csv["kind"]):
        per_kind = pd.read_csv(run_dir / f"findings-{kind}.csv", dtype=str, keep_default_na=False)
        assert set(per_kind["kind"]) == {kind}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run_id"] == outcome.run_id
    assert summary["mode"] == "test"
    assert summary["customers_scanned"] == len(world.account.customers) - len(
        world.account.deleted_customer_ids
    )
    assert summary["users_scanned"] == len(world.account.users)
    assert sum(summary["counts_by_kind"].values()) == len(csv)
    assert summary["requests_by_endpoint"]["GET /v1/customers"] >= 4
    assert summary["duration_seconds"] > 0
    # Where the time went, phase by phase, within the run's own duration.
    phases = summary["phase_seconds"]
    assert set(phases) == {"users", "listing", "snapshot", "missing_lookups", "compare"}
    assert all(seconds >= 0 for seconds in phases.values())
    assert phases["listing"] > 0
    # The users are read while the listing's pages arrive, and the rules run while the
    # missing customers are looked up: those overlap, each pair follows the other.
    overlapped = max(phases["users"], phases["listing"] + phases["snapshot"])
    after = max(phases["missing_lookups"], phases["compare"])
    assert overlapped + after <= summary["duration_seconds"]
    html = (run_dir / "summary.html").read_text()
    assert "<svg" not in html  # bars are table cells: mail clients drop SVG
    assert "duplicate_email" in html
    assert oct((run_dir / "findings.csv").stat().st_mode & 0o777) == oct(0o600)


def test_listing_is_bounded_by_the_runs_start(world: SeededWorld) -> None:
    outcome = execute_job(JOB, world.settings)
    listings = [
        e
        for e in world.sandbox.request_log.entries()
        if e.method == "GET" and e.path == "/v1/customers"
    ]
    assert listings
    # One `created` window per cursor (reconcile.listing.resume); the newest ends at the
    # run's start.
    bounds = {e.params.get("created", {}).get("lt") for e in listings}
    assert None not in bounds
    assert max(int(b) for b in bounds) == outcome.summary["snapshot_created_lt"]
    assert all(e.params.get("limit") == "100" for e in listings)
