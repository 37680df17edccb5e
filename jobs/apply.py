"""Carrying out a plan, safely: dry run by default, limits before the first write, an
audit row for every write, and one failed action never stopping the others.

Before each write: the run's lease is checked (a run whose lease was taken over stops,
`interrupted`, with nothing more written), and the action's recheck (compare-and-set)
re-reads its target and compares it with the state it was planned on: the plan comes
from a listing that may be old (a resumed run's), so what is written never rests on it
alone. A changed target is re-planned from the fresh state where that is simple and safe,
otherwise the action is skipped (`skipped` in the audit log, with the reason). Then the
`started` row is written, and only then the write is sent.

Options a write job reads from its context (`JobContext.options`):
- `apply` (bool): carry the plan out; without it the run is a dry run that only writes
  `plan.csv`.
- `max_changes` (int, default 100): a plan with more writes is refused before the first.
- `confirm_live` (bool): needed to write in live mode (the command also accepts
  `STRIPE_RECONCILE_CONFIRM_LIVE=1`, for unattended runs).
- `after_action` (callable, tests only): called with the number of actions attempted so
  far after each one, to simulate a process killed between two actions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from jobs.base import JobContext, JobResult
from reconcile.errors import (
    ConfigError,
    ReconcileError,
    StripeAuthError,
    StripeConnectionError,
    StripeNotFoundError,
)
from reconcile.job_options import DEFAULT_MAX_CHANGES, confirm_live_from_env
from reconcile.logs import get_logger, redact_text
from reconcile.mode import Mode
from reconcile.rules.findings import empty_findings
from reconcile.rules.plans import ACTION_SKIP, writes_in
from reconcile.state.audit import AuditLog, Outcome, audit_frame

__all__ = [
    "CHANGED_SINCE_LISTING",
    "CONFIRM_LIVE_ENV",
    "DEFAULT_MAX_CHANGES",
    "ActionDone",
    "Handler",
    "PlannedAction",
    "Recheck",
    "carry_out",
    "check_may_write",
    "confirm_live_from_env",
    "live_confirmed",
    "skipped",
]

log = get_logger(__name__)

CONFIRM_LIVE_ENV = "STRIPE_RECONCILE_CONFIRM_LIVE"
CHANGED_SINCE_LISTING = "changed since the listing: "


@dataclass(frozen=True)
class PlannedAction:
    """One plan row, its JSON columns decoded."""

    action: str
    customer_id: str
    user_id: str
    params: dict[str, Any]
    before: dict[str, Any]
    reason: str
    idempotency_key: str

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> PlannedAction:
        return cls(
            action=str(row["action"]),
            customer_id=str(row["customer_id"]),
            user_id=str(row["user_id"]),
            params=dict(json.loads(str(row["params"]) or "{}")),
            before=dict(json.loads(str(row["before"]) or "{}")),
            reason=str(row["reason"]),
            idempotency_key=str(row["idempotency_key"]),
        )


@dataclass(frozen=True)
class ActionDone:
    """What a handler did: the state after, and the ids it touched."""

    after: Mapping[str, Any] = field(default_factory=dict)
    outcome: str = Outcome.APPLIED
    customer_id: str | None = None  # when the action created it
    reason: str = ""  # why nothing was written (a skipped action)


Handler = Callable[[JobContext, PlannedAction], ActionDone]
# Compare-and-set: re-reads the action's target just before the write. Returns the action
# to carry out (the planned one, or one re-planned from the fresh state with its own key),
# or an ActionDone (`skipped`, `unchanged`) when nothing is to be written.
Recheck = Callable[[JobContext, PlannedAction], "PlannedAction | ActionDone"]


def skipped(reason: str) -> ActionDone:
    """An action not carried out because its target changed since the listing."""
    return ActionDone(outcome=Outcome.SKIPPED, reason=CHANGED_SINCE_LISTING + reason)


def current_customer(ctx: JobContext, customer_id: str) -> dict[str, Any] | None:
    """The customer as Stripe holds it now, for a re-check; None once it is deleted
    (`deleted: true` or 404). A 404 pointing at the other mode is a wrong key, never a
    deletion: it is raised and stops the run."""
    try:
        found = ctx.gateway.retrieve_customer(customer_id)
    except StripeNotFoundError as exc:
        if exc.other_mode:
            raise
        return None
    return None if found.get("deleted") else found


def live_confirmed(options: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    """The run's `confirm_live` option, or the environment, confirms live mode.

    Only a real True confirms: an option that reached here as the string "no" must not.
    The variable is read first so that a malformed value is refused even when the option
    alone would confirm.
    """
    from_env = confirm_live_from_env(env)
    return options.get("confirm_live") is True or from_env


def check_may_write(ctx: JobContext, writes: int) -> None:
    """Refuse, before any write, a live run without confirmation or a plan too large."""
    if ctx.gateway.mode is Mode.LIVE and not live_confirmed(ctx.options, os.environ):
        raise ConfigError(
            f"live mode (key {ctx.gateway.masked_key}): --apply also needs --confirm-live "
            f"(or {CONFIRM_LIVE_ENV}=1 for unattended runs); nothing was written"
        )
    limit = int(ctx.options.get("max_changes", DEFAULT_MAX_CHANGES))
    if writes > limit:
        raise ConfigError(
            f"the plan has {writes} changes, more than --max-changes {limit}: nothing was "
            f"written; review it with a dry run (without --apply, see plan.csv), then pass "
            f"--max-changes {writes} to allow it"
        )


def carry_out(
    ctx: JobContext,
    job: str,
    plan: pd.DataFrame,
    handlers: Mapping[str, Handler],
    *,
    rechecks: Mapping[str, Recheck] | None = None,
    findings: pd.DataFrame | None = None,
    facts: Mapping[str, Any] | None = None,
) -> JobResult:
    """Dry run: report the plan. With `apply`: check the limits, then run each action.

    Every attempted action lands in the audit log (state DB and `audit.csv`); a failure
    is recorded and the run goes on, except when Stripe refuses the key or cannot be
    reached (every later action would fail the same way): then the run stops. So does a
    lost lease (LeaseLostError, the run ends `interrupted`). `rechecks[action]`, where
    given, decides from fresh state whether and what to write (see the module).
    """
    writes = writes_in(plan)
    unknown = sorted(set(writes["action"]) - set(handlers))
    if unknown:
        raise ValueError(f"{job}: no handler for plan action(s) {unknown}")
    base_facts: dict[str, Any] = {
        **(facts or {}),
        "dry_run": ctx.dry_run,
        "planned_changes": len(writes),
        "max_changes": int(ctx.options.get("max_changes", DEFAULT_MAX_CHANGES)),
        "skipped": int((plan["action"] == ACTION_SKIP).sum()),
    }
    result_findings = findings if findings is not None else empty_findings()
    if ctx.dry_run:
        log.info("dry run: nothing written", planned=len(writes))
        return JobResult(
            findings=result_findings,
            facts={**base_facts, "applied": 0, "failed": 0},
            extra_tables={"plan": plan},
        )
    try:
        check_may_write(ctx, len(writes))
    except ConfigError as exc:
        # A refused plan is what the person has to review: it is kept all the same.
        folder = _keep_refused_plan(ctx, job, plan, result_findings, base_facts, exc.message)
        raise ConfigError(f"{exc.message}; the refused plan is in {folder}") from None
    audit = AuditLog(ctx.state.engine)
    after_action: Callable[[int], None] | None = ctx.options.get("after_action")
    counts = {Outcome.APPLIED: 0, Outcome.UNCHANGED: 0, Outcome.SKIPPED: 0, Outcome.FAILED: 0}
    for attempted, row in enumerate(writes.to_dict("records"), start=1):
        planned = PlannedAction.from_row(row)
        ctx.check_lease()
        recheck = (rechecks or {}).get(planned.action)
        outcome = _carry_out_one(ctx, audit, job, planned, handlers[planned.action], recheck)
        counts[outcome] += 1
        if after_action is not None:
            after_action(attempted)
    applied, unchanged = counts[Outcome.APPLIED], counts[Outcome.UNCHANGED]
    changed, failed = counts[Outcome.SKIPPED], counts[Outcome.FAILED]
    log.info(
        "plan carried out",
        applied=applied,
        unchanged=unchanged,
        changed_meanwhile=changed,
        failed=failed,
    )
    return JobResult(
        findings=result_findings,
        facts={
            **base_facts,
            "applied": applied,
            "unchanged": unchanged,
            "changed_meanwhile": changed,
            "failed": failed,
        },
        extra_tables={"plan": plan, "audit": audit_frame(audit.recorded)},
        failed_actions=failed,
    )


def _keep_refused_plan(
    ctx: JobContext,
    job: str,
    plan: pd.DataFrame,
    findings: pd.DataFrame,
    facts: Mapping[str, Any],
    reason: str,
) -> Path:
    """The run folder of a refused --apply: plan.csv and a summary saying why."""
    from reports.writer import write_run_reports

    summary = {
        "status": "refused",
        "mode": ctx.gateway.mode.value,
        "started_at": ctx.started_at.isoformat(),
        **facts,
        "applied": 0,
        "refused": reason,
    }
    return write_run_reports(
        ctx.out_dir,
        job,
        ctx.run_id,
        findings,
        summary,
        formats=ctx.settings.reports.formats,
        extra_tables={"plan": plan},
        file_mode=ctx.settings.reports.file_mode,
    )


def _carry_out_one(
    ctx: JobContext,
    audit: AuditLog,
    job: str,
    planned: PlannedAction,
    handler: Handler,
    recheck: Recheck | None,
) -> str:
    """One action: recheck, `started` row, write, final row. Returns its outcome."""
    sent_before = _requests_sent(ctx)
    try:
        decided = recheck(ctx, planned) if recheck is not None else planned
    except ReconcileError as exc:
        return _failed(ctx, audit, job, planned, None, exc, sent_before)
    if isinstance(decided, ActionDone):
        audit.record(
            run_id=ctx.run_id,
            job=job,
            action=planned.action,
            outcome=decided.outcome,
            customer_id=planned.customer_id,
            user_id=planned.user_id,
            before=planned.before,
            after=decided.after,
            idempotency_key=planned.idempotency_key,
            error=redact_text(decided.reason) if decided.reason else None,
        )
        log.info("action not written", action=planned.action, outcome=decided.outcome)
        return decided.outcome
    action = decided
    # The recheck took a request's time: the lease is checked again just before the write.
    ctx.check_lease()
    # No audit row, no write: a failure here raises before anything is sent.
    started = audit.begin(
        run_id=ctx.run_id,
        job=job,
        action=action.action,
        customer_id=action.customer_id,
        user_id=action.user_id,
        before=action.before,
        idempotency_key=action.idempotency_key,
    )
    sent_before = _requests_sent(ctx)
    try:
        done = handler(ctx, action)
    except ReconcileError as exc:
        return _failed(ctx, audit, job, action, started, exc, sent_before)
    audit.finish(
        started,
        run_id=ctx.run_id,
        job=job,
        action=action.action,
        outcome=done.outcome,
        customer_id=done.customer_id or action.customer_id,
        user_id=action.user_id,
        before=action.before,
        after=done.after,
        idempotency_key=action.idempotency_key,
        stripe_request_id=_request_id_since(ctx, sent_before),
        error=redact_text(done.reason) if done.reason else None,
    )
    return done.outcome


def _failed(
    ctx: JobContext,
    audit: AuditLog,
    job: str,
    action: PlannedAction,
    started: int | None,
    exc: ReconcileError,
    sent_before: int,
) -> str:
    fields: dict[str, Any] = {
        "run_id": ctx.run_id,
        "job": job,
        "action": action.action,
        "outcome": Outcome.FAILED,
        "customer_id": action.customer_id,
        "user_id": action.user_id,
        "before": action.before,
        "idempotency_key": action.idempotency_key,
        "stripe_request_id": _request_id_since(ctx, sent_before),
        "error": redact_text(exc.message),
    }
    if started is None:
        audit.record(**fields)
    else:
        audit.finish(started, **fields)
    log.warning("action failed", action=action.action, reason=exc.message)
    if isinstance(exc, StripeAuthError | StripeConnectionError):
        raise exc
    return Outcome.FAILED


def _requests_sent(ctx: JobContext) -> int:
    return sum(ctx.gateway.stats.by_endpoint.values())


def _request_id_since(ctx: JobContext, sent_before: int) -> str | None:
    # An action that wrote only to the user DB has no Stripe request of its own.
    if _requests_sent(ctx) == sent_before:
        return None
    return ctx.gateway.last_request_id()
