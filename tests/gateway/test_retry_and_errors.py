# mypy: disable-error-code="no-untyped-call"
"""The gateway's pure parts: endpoint templates, the retry decision, backoff, error translation."""

from __future__ import annotations

import random
from typing import Any

import pytest
import stripe

from reconcile.errors import StripeAuthError, StripeConnectionError, StripeNotFoundError
from reconcile.mode import Mode
from reconcile.stripe_api.endpoints import endpoint_of
from reconcile.stripe_api.errors import StripeRequestError, translate_stripe_error
from reconcile.stripe_api.retry import RetryPolicy

KEY_TAIL = "Zq9x"
MASKED = f"sk_test_...{KEY_TAIL}"


@pytest.mark.parametrize(
    ("method", "url", "endpoint"),
    [
        ("get", "https://api.stripe.com/v1/customers?limit=100", "GET /v1/customers"),
        ("get", "http://127.0.0.1:1/v1/customers/cus_abc", "GET /v1/customers/{id}"),
        ("get", "http://h/v1/customers/cus_Q1w2E3", "GET /v1/customers/{id}"),
        ("get", "http://h/v1/customers/search?query=x", "GET /v1/customers/search"),
        (
            "get",
            "http://h/v1/customers/cus_1/payment_methods?type=card",
            "GET /v1/customers/{id}/payment_methods",
        ),
        ("post", "http://h/v1/customers/cus_1", "POST /v1/customers/{id}"),
        ("post", "http://h/v1/customers", "POST /v1/customers"),
        ("delete", "http://h/v1/customers/cus_1", "DELETE /v1/customers/{id}"),
        ("post", "http://h/v1/payment_methods/pm_1/attach", "POST /v1/payment_methods/{id}/attach"),
        (
            "post",
            "http://h/v1/test_helpers/test_clocks/clock_1/advance",
            "POST /v1/test_helpers/test_clocks/{id}/advance",
        ),
    ],
)
def test_endpoint_of(method: str, url: str, endpoint: str) -> None:
    assert endpoint_of(method, url) == endpoint


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (429, {}, True),
        (429, {"Stripe-Should-Retry": "false"}, True),  # a limit, not a failure
        (500, {}, True),
        (502, {}, True),
        (503, {}, True),
        (504, {}, True),
        (500, {"stripe-should-retry": "false"}, False),
        (409, {}, False),
        (409, {"Stripe-Should-Retry": "true"}, True),
        (400, {}, False),
        (401, {}, False),
        (404, {}, False),
        (200, {}, False),
    ],
)
def test_should_retry_by_status_and_header(
    status: int, headers: dict[str, str], expected: bool
) -> None:
    assert RetryPolicy().should_retry(0, status, headers) is expected


def test_should_retry_connection_errors_only_when_retryable_and_within_max() -> None:
    policy = RetryPolicy(max_retries=2)
    assert policy.should_retry(0, None, None, connection_error_retryable=True)
    assert not policy.should_retry(0, None, None, connection_error_retryable=False)
    assert policy.should_retry(1, 429, {})
    assert not policy.should_retry(2, 429, {})


def test_backoff_doubles_from_one_second_and_is_capped() -> None:
    policy = RetryPolicy(jitter=0.25)
    # With the random draw at its middle the nominal delays show: 1, 2, 4, 8, 8.
    assert [policy.backoff(n, 0.5) for n in range(1, 6)] == [1, 2, 4, 8, 8]
    assert policy.backoff(3, 0.0) == pytest.approx(3.0)
    assert policy.backoff(3, 0.999999) == pytest.approx(5.0, rel=1e-5)


def test_delay_uses_the_injected_random_and_honours_retry_after() -> None:
    policy = RetryPolicy()
    first = policy.delay(1, {}, random.Random(3))
    assert first == policy.delay(1, {}, random.Random(3))
    assert 0.75 <= first <= 1.25
    assert policy.delay(1, {"Retry-After": "7"}, random.Random(3)) == 7.0
    assert policy.delay(4, {"retry-after": "1"}, random.Random(3)) >= 6.0  # backoff is longer
    assert policy.delay(1, {"Retry-After": "86400"}, random.Random(3)) == policy.max_retry_after
    assert policy.delay(1, {"Retry-After": "soon"}, random.Random(3)) == first


def translate(exc: stripe.StripeError, **kwargs: Any) -> Exception:
    defaults: dict[str, Any] = {
        "what": "GET /v1/customers/{id}",
        "masked_key": MASKED,
        "mode": Mode.TEST,
        "api_base": "http://127.0.0.1:9",
        "max_retries": 5,
    }
    return translate_stripe_error(exc, **{**defaults, **kwargs})


def test_401_names_the_masked_key_and_the_setting() -> None:
    exc = stripe.AuthenticationError(
        "Invalid API Key provided: sk_test_" + "a" * 20 + KEY_TAIL, http_status=401
    )
    error = translate(exc)
    assert isinstance(error, StripeAuthError)
    assert str(error) == (
        f"Stripe refused the key {MASKED} (401 authentication_error): check STRIPE_SECRET_KEY"
    )


def test_403_names_the_missing_permission() -> None:
    exc = stripe.PermissionError(
        "The provided key 'rk_test_*****Zq9x' does not have the required permissions for this "
        "endpoint on account 'acct_1'. Having the 'rak_customer_read' permission would allow "
        "this request to continue.",
        http_status=403,
    )
    error = translate(exc)
    assert isinstance(error, StripeAuthError)
    assert "rak_customer_read" in str(error)
    assert "restricted key" in str(error)


def test_404_of_the_other_mode_says_so_in_plain_words() -> None:
    exc = stripe.InvalidRequestError(
        "No such customer: 'cus_L1ve'; a similar object exists in live mode, but a test mode "
        "key was used to make this request.",
        param="id",
        code="resource_missing",
        http_status=404,
    )
    error = translate(exc)
    assert isinstance(error, StripeNotFoundError)
    assert error.object_id == "cus_L1ve"
    assert error.other_mode is True
    assert "exists in live mode" in str(error)
    assert f"the key {MASKED} is a test-mode key" in str(error)


def test_404_absent() -> None:
    exc = stripe.InvalidRequestError(
        "No such customer: 'cus_gone'", param="id", code="resource_missing", http_status=404
    )
    error = translate(exc, object_id="cus_gone")
    assert isinstance(error, StripeNotFoundError)
    assert (error.object_id, error.other_mode) == ("cus_gone", False)


def test_connection_error_names_the_api_base() -> None:
    error = translate(stripe.APIConnectionError("boom", should_retry=True))
    assert isinstance(error, StripeConnectionError)
    assert "http://127.0.0.1:9" in str(error)
    assert "after 5 retries" in str(error)


def test_other_refusals_keep_status_code_and_param_without_personal_data() -> None:
    exc = stripe.InvalidRequestError(
        "Invalid email address: ann@example.com", param="email", code="email_invalid",
        http_status=400,
    )
    error = translate(exc, what="POST /v1/customers")
    assert isinstance(error, StripeRequestError)
    assert (error.status, error.code, error.param) == (400, "email_invalid", "email")
    assert "ann@example.com" not in str(error)
    assert "\n" not in str(error)
