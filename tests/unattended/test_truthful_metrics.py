"""Metrics that tell the truth: failed runs, findings by severity, reads, Prometheus names."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs.reconcile_job import JOB
from jobs.runner import execute_job
from reconcile.errors import ReconcileError
from reconcile.unattended_settings import MetricsSettings
from tests.seeded import SeededWorld

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
JOB_LABEL = (("job_name", "reconcile"),)


def _samples(folder: Path) -> tuple[Samples, dict[str, str]]:
    text = (folder / "stripe_reconcile_reconcile.prom").read_text()
    families = list(text_string_to_metric_families(text))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families
        for s in family.samples
    }
    return samples, {family.name: family.type for family in families}


def test_a_failed_run_writes_its_status_and_exit_code(world: SeededWorld, tmp_path: Path) -> None:
    # A users table that is not there: the run fails after Stripe was read (exit 4).
    settings = world.settings.model_copy(
        update={
            "metrics": MetricsSettings(textfile_dir=str(tmp_path)),
            "userdb": world.settings.userdb.model_copy(update={"table": "no_such_table"}),
        }
    )
    with pytest.raises(ReconcileError) as failed:
        execute_job(JOB, settings)
    samples, _types = _samples(tmp_path)
    assert samples[("stripe_reconcile_last_run_status", (*JOB_LABEL, ("status", "failed")))] == 1
    assert samples[("stripe_reconcile_last_run_status", (*JOB_LABEL, ("status", "succeeded")))] == 0
    assert samples[("stripe_reconcile_last_run_exit_code", JOB_LABEL)] == failed.value.exit_code
    assert failed.value.exit_code != 0
    assert ("stripe_reconcile_last_success_timestamp_seconds", JOB_LABEL) not in samples
    assert ("stripe_reconcile_rate_limited", JOB_LABEL) in samples


def test_findings_by_kind_and_severity_reads_and_conventional_names(
    world: SeededWorld, tmp_path: Path
) -> None:
    settings = world.settings.model_copy(
        update={"metrics": MetricsSettings(textfile_dir=str(tmp_path))}
    )
    outcome = execute_job(JOB, settings)
    samples, types = _samples(tmp_path)
    by_severity = {
        (str(kind), str(severity)): count
        for kind, severity, count in outcome.findings.groupby(["kind", "severity"])
        .size()
        .reset_index()
        .itertuples(index=False)
    }
    assert len(by_severity) > 0
    for (kind, severity), count in by_severity.items():
        labels = (*JOB_LABEL, ("kind", str(kind)), ("severity", str(severity)))
        assert samples[("stripe_reconcile_findings", tuple(sorted(labels)))] == count
    assert samples[("stripe_reconcile_last_run_findings", JOB_LABEL)] == len(outcome.findings)
    reads = sum(
        n
        for endpoint, n in outcome.summary["requests_by_endpoint"].items()
        if endpoint[:4] == "GET "
    )
    assert reads > 0
    assert samples[("stripe_reconcile_reads", JOB_LABEL)] == reads
    assert samples[("stripe_reconcile_rate_limited", JOB_LABEL)] == outcome.summary["rate_limited"]
    # Every value describes one run: gauges, and no gauge carries a counter's `_total`.
    assert set(types.values()) == {"gauge"}
    assert not [name for name in types if name.endswith("_total")]
