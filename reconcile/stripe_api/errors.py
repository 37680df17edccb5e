"""Stripe SDK errors translated into the project's own, one line each, never with a full key."""

from __future__ import annotations

import re

import stripe

from reconcile.errors import (
    ReconcileError,
    StripeAuthError,
    StripeConnectionError,
    StripeError,
    StripeNotFoundError,
)
from reconcile.logs import redact_text
from reconcile.mode import Mode

__all__ = ["StripeRequestError", "translate_stripe_error"]

_OTHER_MODE = re.compile(r"similar object exists in (test|live) mode")
_QUOTED_ID = re.compile(r"'([A-Za-z0-9_]+)'")
_PERMISSION = re.compile(r"'(rak_[a-z0-9_]+)'")


class StripeRequestError(StripeError):
    """Stripe refused a request (4xx other than auth and not-found), or kept failing (5xx, 429).

    Carries the status, Stripe's error code and the parameter it named, so callers can
    react to one kind of refusal (the pager's fallback when ``created`` is rejected).
    """

    def __init__(self, message: str, *, status: int | None, code: str | None, param: str | None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param


def translate_stripe_error(
    exc: stripe.StripeError,
    *,
    what: str,
    masked_key: str,
    mode: Mode,
    api_base: str,
    object_id: str | None = None,
    max_retries: int = 0,
) -> ReconcileError:
    """The project's error for ``exc``, raised while doing ``what`` (e.g. "GET /v1/customers")."""
    status = exc.http_status
    stripe_message = redact_text(exc.user_message or str(exc) or type(exc).__name__).strip()
    if isinstance(exc, stripe.AuthenticationError):
        return StripeAuthError(
            f"Stripe refused the key {masked_key} ({status} authentication_error): "
            "check STRIPE_SECRET_KEY"
        )
    if isinstance(exc, stripe.PermissionError):
        permission = _PERMISSION.search(stripe_message)
        needed = f"the permission {permission.group(1)}" if permission else "a permission"
        return StripeAuthError(
            f"The key {masked_key} lacks {needed} for {what} (403): grant it to the restricted "
            "key in the Stripe dashboard (Developers > API keys), or use a key that has it"
        )
    if isinstance(exc, stripe.APIConnectionError):
        retried = f"after {max_retries} retries" if exc.should_retry else "(not retried)"
        return StripeConnectionError(
            f"Could not reach the Stripe API at {api_base} {retried} for {what}: "
            "check STRIPE_API_BASE / [stripe] api_base and the network (each try waits "
            "[stripe] timeout_seconds for an answer)"
        )
    if (
        isinstance(exc, stripe.InvalidRequestError)
        and status == 404
        and exc.code
        in (
            "resource_missing",
            None,
        )
    ):
        return _not_found(stripe_message, object_id, masked_key=masked_key, mode=mode)
    if isinstance(exc, stripe.RateLimitError):
        return StripeRequestError(
            f"Stripe kept rate-limiting {what} ({status}) after {max_retries} retries: lower "
            "[stripe] max_requests_per_second or run fewer jobs on this account at once",
            status=status,
            code=exc.code,
            param=None,
        )
    param = getattr(exc, "param", None)
    if status is not None and status >= 500:
        hint = f"after {max_retries} retries: try again later, or check {api_base}"
    else:
        hint = "check the parameters sent; if they are right, the server does not support them"
    named = f", param {param}" if param else ""
    return StripeRequestError(
        f"Stripe refused {what} ({status} {exc.code or type(exc).__name__}{named}: "
        f"{stripe_message}) {hint}",
        status=status,
        code=exc.code,
        param=param,
    )


def _not_found(
    stripe_message: str, object_id: str | None, *, masked_key: str, mode: Mode
) -> StripeNotFoundError:
    quoted = _QUOTED_ID.search(stripe_message)
    missing_id = object_id or (quoted.group(1) if quoted else "(unknown id)")
    other = _OTHER_MODE.search(stripe_message)
    if other is not None:
        exists_in = other.group(1)
        message = (
            f"{missing_id} does not exist in {mode.value} mode but exists in {exists_in} mode: "
            f"the key {masked_key} is a {mode.value}-mode key and the object belongs to "
            f"{exists_in} mode; use a {exists_in}-mode key or fix the stored id"
        )
        return StripeNotFoundError(message, missing_id, True)
    message = (
        f"{missing_id} does not exist in {mode.value} mode for the key {masked_key} (404 "
        "resource_missing): it was deleted, belongs to another account, or the id is wrong"
    )
    return StripeNotFoundError(message, missing_id, False)
