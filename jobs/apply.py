"""Carrying out a plan, safely: dry run by default, limits before the first write, an
audit row for every write, and one failed action never stopping the others.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from jobs.audit import AuditLog, Outcome, audit_frame
from jobs.base import JobContext, JobResult
from reconcile.errors import (
    ConfigError,
    ReconcileError,
    StripeAuthError,
    StripeConnectionError,
)
from reconcile.findings import empty_findings
from reconcile.logs import get_logger, redact_text
from reconcile.mode import Mode
from reconcile.plans import ACTION_SKIP, writes_in

__all__ = [
    "CONFIRM_LIVE_ENV",
    "DEFAULT_MAX_CHANGES",
    "ActionDone",
    "Handler",
    "PlannedAction",
    "carry_out",
    "check_may_write",
    "confirm_live_from_env",
]

log = get_logger(__name__)

CONFIRM_LIVE_ENV = "STRIPE_RECONCILE_CONFIRM_LIVE"
DEFAULT_MAX_CHANGES = 100


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


Handler = Callable[[JobContext, PlannedAction], ActionDone]


def confirm_live_from_env(env: Mapping[str, str]) -> bool:
    return env.get(CONFIRM_LIVE_ENV, "").strip().lower() in ("1", "true", "yes")


def check_may_write(ctx: JobContext, writes: int) -> None:
    """Refuse, before any write, a live run without confirmation or a plan too large."""
    if ctx.gateway.mode is Mode.LIVE and not ctx.options.get("confirm_live", False):
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
    findings: pd.DataFrame | None = None,
    facts: Mapping[str, Any] | None = None,
) -> JobResult:
    """Dry run: report the plan. With `apply`: check the limits, then run each action.

    Every attempted action lands in the audit log (state DB and `audit.csv`); a failure
    is recorded and the run goes on, except when Stripe refuses the key or cannot be
    reached (every later action would fail the same way): then the run stops.
    """
    writes = writes_in(plan)
    unknown = sorted(set(writes["action"]) - set(handlers))
    if unknown:
        raise ValueError(f"{job}: no handler for plan action(s) {unknown}")
    base_facts: dict[str, Any] = {
        **(facts or {}),
        "dry_run": ctx.dry_run,
        "planned_changes": len(writes),
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
    check_may_write(ctx, len(writes))
    audit = AuditLog(ctx.state.engine)
    after_action: Callable[[int], None] | None = ctx.options.get("after_action")
    applied = unchanged = failed = 0
    for attempted, row in enumerate(writes.to_dict("records"), start=1):
        action = PlannedAction.from_row(row)
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
            done = handlers[action.action](ctx, action)
        except ReconcileError as exc:
            failed += 1
            audit.finish(
                started,
                run_id=ctx.run_id,
                job=job,
                action=action.action,
                outcome=Outcome.FAILED,
                customer_id=action.customer_id,
                user_id=action.user_id,
                before=action.before,
                idempotency_key=action.idempotency_key,
                stripe_request_id=_request_id_since(ctx, sent_before),
                error=redact_text(exc.message),
            )
            log.warning("action failed", action=action.action, reason=exc.message)
            if isinstance(exc, StripeAuthError | StripeConnectionError):
                raise
        else:
            if done.outcome == Outcome.APPLIED:
                applied += 1
            else:
                unchanged += 1
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
            )
        if after_action is not None:
            after_action(attempted)
    log.info("plan carried out", applied=applied, unchanged=unchanged, failed=failed)
    return JobResult(
        findings=result_findings,
        facts={**base_facts, "applied": applied, "unchanged": unchanged, "failed": failed},
        extra_tables={"plan": plan, "audit": audit_frame(audit.recorded)},
        failed_actions=failed,
    )


def _requests_sent(ctx: JobContext) -> int:
    return sum(ctx.gateway.stats.by_endpoint.values())


def _request_id_since(ctx: JobContext, sent_before: int) -> str | None:
    # An action that wrote only to the user DB has no Stripe request of its own.
    if _requests_sent(ctx) == sent_before:
        return None
    return ctx.gateway.last_request_id()
