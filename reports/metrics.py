"""Run metrics for alerting: a Prometheus textfile and, when configured, a Pushgateway push.

Plugged in after every run (an AfterRun step of the job runner). With `[metrics]
textfile_dir` set, `<dir>/stripe_reconcile_<job>.prom` is replaced atomically (for
node_exporter's textfile collector); with `pushgateway_url` set, the same metrics are
pushed under `job=<job_label>` and `job_name=<job>`. Either failing is a DeliveryError:
the run's reports are kept and the exit code is 7.

The job's name is the `job_name` label, not `job`, which Prometheus sets itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from reconcile.errors import EXIT_CONFIG, EXIT_INTERNAL, DeliveryError, ReconcileError
from reconcile.logs import get_logger
from reconcile.settings import Settings
from reconcile.stripe_api.endpoints import reads_of
from reconcile.stripe_api.http import RequestStats

__all__ = [
    "PUSH_TIMEOUT_SECONDS",
    "FinishedRun",
    "exit_code_of",
    "failed_run_summary",
    "metrics_registry",
    "textfile_path",
    "write_failed_run_metrics",
    "write_metrics",
]

log = get_logger(__name__)

PUSH_TIMEOUT_SECONDS = 10.0
_STATUSES = ("succeeded", "partial", "failed", "interrupted")


def textfile_path(folder: str | Path, job: str) -> Path:
    return Path(folder) / f"stripe_reconcile_{job.replace('-', '_')}.prom"


class FinishedRun(Protocol):
    """What the metrics read of a run whose reports are in place (the runner's outcome)."""

    @property
    def summary(self) -> Mapping[str, Any]: ...

    @property
    def exit_code(self) -> int: ...

    @property
    def findings(self) -> pd.DataFrame: ...


def metrics_registry(
    summary: Mapping[str, Any],
    exit_code: int,
    findings: pd.DataFrame | None = None,
) -> CollectorRegistry:
    """The gauges of one run's summary (summary.json's content), in a fresh registry.

    Every value describes the last run, so every metric is a gauge and none ends in
    `_total` (Prometheus keeps that suffix for counters). `findings` (kind and severity
    columns) splits the findings by severity; without it they are split by kind only.
    """
    job = str(summary["job"])
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, ("job_name", *labels), registry=registry)

    finished = datetime.fromisoformat(str(summary["finished_at"])).timestamp()
    status = str(summary.get("status", "succeeded"))
    gauge("stripe_reconcile_last_run_timestamp_seconds", "When the last run finished.").labels(
        job
    ).set(finished)
    if status == "succeeded":
        gauge(
            "stripe_reconcile_last_success_timestamp_seconds",
            "When the last fully successful run finished (alert when it grows old).",
        ).labels(job).set(finished)
    gauge("stripe_reconcile_last_run_duration_seconds", "Duration of the last run.").labels(
        job
    ).set(float(summary.get("duration_seconds", 0)))
    status_gauge = gauge(
        "stripe_reconcile_last_run_status", "1 for the last run's status, 0 otherwise.", ("status",)
    )
    for name in _STATUSES:
        status_gauge.labels(job, name).set(1 if name == status else 0)
    gauge("stripe_reconcile_last_run_exit_code", "Exit code of the last run.").labels(job).set(
        exit_code
    )
    counts: Mapping[str, int] = summary.get("counts_by_kind", {})
    by_kind = gauge(
        "stripe_reconcile_findings",
        "Findings of the last run by kind and severity.",
        ("kind", "severity"),
    )
    if findings is not None and {"kind", "severity"} <= set(findings.columns) and len(findings):
        grouped = findings.groupby(["kind", "severity"]).size()
        for key, count in grouped.items():
            kind, severity = key if isinstance(key, tuple) else (key, "")
            by_kind.labels(job, str(kind), str(severity)).set(int(count))
    else:
        for kind, count in counts.items():
            by_kind.labels(job, kind, "").set(count)
    gauge("stripe_reconcile_last_run_findings", "All findings of the last run.").labels(job).set(
        sum(counts.values())
    )
    by_endpoint: Mapping[str, int] = dict(summary.get("requests_by_endpoint", {}))
    requests = gauge(
        "stripe_reconcile_requests", "Stripe requests of the last run by endpoint.", ("endpoint",)
    )
    for endpoint, count in by_endpoint.items():
        requests.labels(job, endpoint).set(count)
    gauge("stripe_reconcile_reads", "GET requests of the last run (Stripe's read budget).").labels(
        job
    ).set(reads_of(by_endpoint))
    gauge("stripe_reconcile_rate_limited", "429 answers in the last run.").labels(job).set(
        int(summary.get("rate_limited", 0))
    )
    gauge("stripe_reconcile_retries", "Retried requests in the last run.").labels(job).set(
        int(summary.get("retries", 0))
    )
    return registry


def failed_run_summary(
    job: str,
    run_id: str,
    status: str,
    stats: RequestStats,
    finished_at: datetime,
    duration_seconds: float,
) -> dict[str, Any]:
    """What a run that ended without reports can still say about itself."""
    snapshot = stats.snapshot()
    return {
        "job": job,
        "run_id": run_id,
        "status": status,
        "finished_at": finished_at.isoformat(),
        "duration_seconds": duration_seconds,
        "counts_by_kind": {},
        "requests_by_endpoint": dict(snapshot["requests"]),
        "rate_limited": int(snapshot["rate_limited"]),
        "retries": int(snapshot["retries"]),
    }


def write_failed_run_metrics(
    summary: Mapping[str, Any], exit_code: int, settings: Settings
) -> None:
    """The metrics of a run that ended without reports; never raises (its error matters more)."""
    try:
        _write(metrics_registry(summary, exit_code), str(summary["job"]), settings)
    except DeliveryError as exc:
        log.error("metrics of the failed run not written", reason=exc.message)


def exit_code_of(exc: BaseException) -> int:
    """The exit code the CLI turns `exc` into (the same mapping as its command group's)."""
    if isinstance(exc, ReconcileError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    if isinstance(exc, OSError):
        return EXIT_CONFIG
    return EXIT_INTERNAL


def write_metrics(outcome: FinishedRun, settings: Settings) -> None:
    """AfterRun: the textfile and the push, as configured; nothing when neither is set."""
    config = settings.metrics
    if config.textfile_dir is None and config.pushgateway_url is None:
        return
    registry = metrics_registry(outcome.summary, outcome.exit_code, outcome.findings)
    _write(registry, str(outcome.summary["job"]), settings)


def _write(registry: CollectorRegistry, job: str, settings: Settings) -> None:
    config = settings.metrics
    if config.textfile_dir is None and config.pushgateway_url is None:
        return
    failures: list[str] = []
    if config.textfile_dir is not None:
        path = textfile_path(config.textfile_dir, job)
        try:
            # Written to a temporary name and renamed: the collector never reads half a file.
            write_to_textfile(str(path), registry)
        except OSError as exc:
            failures.append(
                f"metrics textfile {path} could not be written ({exc.strerror or exc}): "
                "check [metrics] textfile_dir exists and is writable"
            )
    if config.pushgateway_url is not None:
        try:
            push_to_gateway(
                config.pushgateway_url,
                job=config.job_label,
                registry=registry,
                grouping_key={"job_name": job},
                timeout=PUSH_TIMEOUT_SECONDS,
            )
        except OSError as exc:  # URLError and HTTPError are OSErrors
            reason = getattr(exc, "reason", None) or exc
            failures.append(
                f"metrics push to {config.pushgateway_url} failed ({reason}): "
                "check [metrics] pushgateway_url and that the Pushgateway is up"
            )
    if failures:
        raise DeliveryError("; ".join(failures))
    log.info("metrics written", textfile=config.textfile_dir, pushgateway=config.pushgateway_url)
