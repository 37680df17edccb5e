"""Two real runs against the sandbox: an anomaly fixed in between is resolved, one planted
in between is new; in summary.json, new.csv / resolved.csv, summary.html and `runs diff`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from click.testing import CliRunner, Result

from jobs.commands.cli import cli
from jobs.reconcile_job import JOB
from jobs.runner import RunOutcome, execute_job
from tests.seeded import TEST_KEY, SeededWorld

PLANTED_PLAN = "planted-plan"


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _lonely_orphan(outcome: RunOutcome) -> str:
    """An orphan customer that no other finding mentions: deleting it resolves one finding."""
    findings = outcome.findings
    mentioned: dict[str, int] = {}
    for row in findings.to_dict("records"):
        for customer in [row["customer_id"], *str(row["related_ids"]).split(";")]:
            if customer:
                mentioned[customer] = mentioned.get(customer, 0) + 1
    orphans = findings[findings["kind"] == "orphan_customer"]["customer_id"]
    lonely = [c for c in orphans if mentioned[c] == 1]
    assert lonely, "the seeded account has no orphan customer to fix"
    return str(lonely[0])


def _plant_stale_plan(world: SeededWorld, outcome: RunOutcome) -> tuple[str, str]:
    """Change the plan of a linked user with no finding: one new stale_metadata finding."""
    involved = set(outcome.findings["customer_id"]) | set(outcome.findings["user_id"])
    engine = sa.create_engine(world.users_url)
    try:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT id, stripe_customer_id FROM users WHERE stripe_customer_id "
                    "IS NOT NULL AND deleted_at IS NULL ORDER BY id"
                )
            ).all()
            user_id, customer_id = next(
                (str(u), str(c)) for u, c in rows if str(u) not in involved and c not in involved
            )
            conn.execute(
                sa.text("UPDATE users SET plan = :plan WHERE id = :id"),
                {"plan": PLANTED_PLAN, "id": int(user_id)},
            )
    finally:
        engine.dispose()
    return user_id, customer_id


def _cli(world: SeededWorld, tmp_path: Path, *args: str) -> Result:
    config = tmp_path / "runs.toml"
    config.write_text(f'[state]\nurl = "{world.settings.state.url}"\n')
    env = {"STRIPE_SECRET_KEY": TEST_KEY, "STRIPE_API_BASE": world.sandbox.url}
    result = CliRunner().invoke(cli, [*args, "--config", str(config)], env=env)
    assert result.exit_code == 0, result.output
    return result


def test_a_fixed_anomaly_is_resolved_and_a_planted_one_is_new(
    world: SeededWorld, tmp_path: Path
) -> None:
    first = execute_job(JOB, world.settings)
    assert first.summary["changes"]["since_run"] is None
    assert first.summary["changes"]["reason"] == "first completed reconcile run in test mode"
    assert not (first.run_dir / "new.csv").exists()
    assert "No comparison: first completed reconcile run in test mode" in (
        first.run_dir / "summary.html"
    ).read_text(encoding="utf-8")

    fixed = _lonely_orphan(first)
    world.sandbox.store.mark_deleted("test", [fixed])
    user_id, customer_id = _plant_stale_plan(world, first)

    second = execute_job(JOB, world.settings)

    expected = {
        "since_run": first.run_id,
        "new": 1,
        "resolved": 1,
        "still_open": len(first.findings) - 1,
        "reason": None,
    }
    assert second.summary["changes"] == expected
    summary = json.loads((second.run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["changes"] == expected

    resolved = _csv(second.run_dir / "resolved.csv")
    assert list(resolved.columns) == list(_csv(second.run_dir / "findings.csv").columns)
    assert resolved[["kind", "customer_id"]].values.tolist() == [["orphan_customer", fixed]]
    new = _csv(second.run_dir / "new.csv")
    assert new[["kind", "customer_id", "user_id", "field", "local_value"]].values.tolist() == [
        ["stale_metadata", customer_id, user_id, "metadata.plan", PLANTED_PLAN]
    ]

    page = (second.run_dir / "summary.html").read_text(encoding="utf-8")
    assert f"Compared with run {first.run_id}" in page
    changes = page[page.index('<h2 id="changes">') : page.index('<h2 id="run">')]
    assert '<a href="new.csv">' in changes
    assert '<a href="resolved.csv">' in changes
    assert fixed in changes
    assert PLANTED_PLAN in changes

    # The same answer for scripts, through `runs diff` (default: the last two runs).
    diffed: dict[str, Any] = json.loads(_cli(world, tmp_path, "runs", "diff", "--json").stdout)
    assert diffed["from"]["run_id"] == first.run_id
    assert diffed["to"]["run_id"] == second.run_id
    assert diffed["counts"] == {"new": 1, "resolved": 1, "still_open": len(first.findings) - 1}
    assert [row["customer_id"] for row in diffed["resolved"]] == [fixed]
    assert [row["local_value"] for row in diffed["new"]] == [PLANTED_PLAN]
    for args in ([first.run_id, second.run_id], [second.run_id]):
        again = json.loads(_cli(world, tmp_path, "runs", "diff", *args, "--json").stdout)
        assert again == diffed
    text = _cli(world, tmp_path, "runs", "diff").stdout
    assert "1 new, 1 resolved" in text
    assert text.index("new (1):") < text.index(customer_id) < text.index("resolved (1):")
    assert text.index("resolved (1):") < text.index(fixed)


def test_runs_json_and_show_kind(world: SeededWorld, tmp_path: Path) -> None:
    outcome = execute_job(JOB, world.settings)

    listed = json.loads(_cli(world, tmp_path, "runs", "--json").stdout)
    assert [run["run_id"] for run in listed["runs"]] == [outcome.run_id]
    run = listed["runs"][0]
    assert run["status"] == "succeeded"
    assert run["mode"] == "test"
    assert run["findings"] == len(outcome.findings)
    assert run["counts_by_kind"] == outcome.summary["counts_by_kind"]
    assert run["report_dir"] == str(outcome.run_dir)
    assert listed["reads_last_30_days"]["total"] > 0

    shown = json.loads(_cli(world, tmp_path, "runs", "show", outcome.run_id, "--json").stdout)
    assert shown["run_id"] == outcome.run_id
    assert shown["changes"]["since_run"] is None
    assert shown["requests_by_endpoint"] == outcome.summary["requests_by_endpoint"]

    kind = "missing_customer"
    expected = outcome.findings[outcome.findings["kind"] == kind]
    rows = json.loads(
        _cli(world, tmp_path, "runs", "show", outcome.run_id, "--kind", kind, "--json").stdout
    )
    assert rows["count"] == len(expected) > 0
    assert [r["customer_id"] for r in rows["findings"]] == expected["customer_id"].tolist()
    assert {r["kind"] for r in rows["findings"]} == {kind}
    text = _cli(world, tmp_path, "runs", "show", outcome.run_id, "--kind", kind).stdout
    assert text.startswith(f"{kind} (error): {len(expected)} in run {outcome.run_id}")
    for customer in expected["customer_id"]:
        assert customer in text
    assert f"findings-{kind}.csv" in text
