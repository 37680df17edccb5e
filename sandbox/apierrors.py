"""Stripe's error bodies, raised by handlers and rendered once by the server."""

from __future__ import annotations

from typing import Any

__all__ = [
    "STRIPE_RATE_LIMIT_REASONS",
    "ApiError",
    "card_error",
    "invalid_request",
    "no_such",
    "rate_limited",
    "unknown_parameter",
]

_DOC_BASE = "https://stripe.com/docs/error-codes/"


class ApiError(Exception):
    """An error response: HTTP status plus Stripe's `{"error": {...}}` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = _DOC_BASE + self.code.replace("_", "-")
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, code=code, param=param)


def unknown_parameter(name: str) -> ApiError:
    return ApiError(
        400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name
    )


def no_such(
    kind: str, object_id: str, *, param: str = "id", other_mode: str | None = None
) -> ApiError:
    """Stripe's 404; `other_mode` names the mode the id does exist in, as Stripe hints."""
    message = f"No such {kind}: '{object_id}'"
    if other_mode is not None:
        used = "live" if other_mode == "test" else "test"
        message += (
            f"; a similar object exists in {other_mode} mode, "
            f"but a {used} mode key was used to make this request."
        )
    return ApiError(404, message, code="resource_missing", param=param)


def card_error(message: str, *, code: str, param: str) -> ApiError:
    return ApiError(402, message, type_="card_error", code=code, param=param)


# The limiters Stripe names in `Stripe-Rate-Limited-Reason` (its rate-limits page).
STRIPE_RATE_LIMIT_REASONS = (
    "global-rate",
    "endpoint-rate",
    "global-concurrency",
    "endpoint-concurrency",
    "resource-specific",
)


def rate_limited(reason: str) -> ApiError:
    """A 429 as Stripe sends it: no Stripe-Should-Retry (Stripe sends that only on lock
    timeouts, so the SDK does not retry), and the limiter named in
    `Stripe-Rate-Limited-Reason`. Search has a limit of its own, which Stripe reports as an
    endpoint's; the sandbox's own header keeps the finer name (`search-rate`). An empty
    reason sends no Stripe header: a 429 that is not a rate limit."""
    headers = {"Sandbox-Rate-Limited-Reason": reason or "none"}
    stripe_reason = "endpoint-rate" if reason == "search-rate" else reason
    if stripe_reason:
        headers["Stripe-Rate-Limited-Reason"] = stripe_reason
    return ApiError(
        429,
        "Request rate limit exceeded. Learn more about rate limits here "
        "https://stripe.com/docs/rate-limits.",
        code="rate_limit",
        headers=headers,
    )
