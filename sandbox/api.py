"""The Stripe endpoints the project uses: pure functions of (store, mode, parameters).

Each handler validates everything before it changes anything, so a refused request leaves
no partial state behind, and returns (HTTP status, JSON body) or raises `ApiError`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.apierrors import ApiError, invalid_request, no_such
from sandbox.events import MAX_TYPES, EventRecord
from sandbox.objects import (
    customer_json,
    deleted_customer_json,
    event_json,
    fingerprint_of,
    payment_method_json,
    subscription_json,
)
from sandbox.params import Spec, require, validate
from sandbox.query import QueryError, parse_query, run_query
from sandbox.store import (
    PAYMENT_METHOD_TYPES,
    SUBSCRIPTION_STATUSES,
    TERMINAL_SUBSCRIPTION_STATUSES,
    CustomerRecord,
    ModeStore,
    PaymentMethodRecord,
    SandboxStore,
    SubscriptionRecord,
)
from sandbox.validation import (
    card_brand,
    check_account_number,
    check_card,
    check_email,
    check_expiry,
    check_iban,
    check_metadata,
    check_routing_number,
    merge_metadata,
)

__all__ = ["ROUTES", "Call", "Route", "match_route"]

Result = tuple[int, dict[str, Any]]


@dataclass(slots=True)
class Call:
    sandbox: SandboxStore
    data: ModeStore
    mode: str
    params: dict[str, Any]
    args: tuple[str, ...]
    # The API request (its id, and its idempotency key for a POST): events name them.
    request_id: str | None = None
    idempotency_key: str | None = None

    @property
    def livemode(self) -> bool:
        return self.mode == "live"


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Callable[[Call], Result]
    is_search: bool = False


_LIST_PAGING: Spec = {
    "limit": "int",
    "starting_after": "str",
    "ending_before": "str",
    "expand": "list",
}
_CUSTOMER_FIELDS: Spec = {
    "email": "str",
    "name": "str",
    "phone": "str",
    "description": "str",
    "metadata": "map",
    "invoice_settings": {"default_payment_method": "str"},
    "balance": "int",
    "expand": "list",
}
_CUSTOMER_EXPANDS = {"invoice_settings.default_payment_method", "default_source"}
_ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")
_BILLING_SPEC: Spec = {
    "name": "str",
    "email": "str",
    "phone": "str",
    "address": {name: "str" for name in _ADDRESS_FIELDS},
}
# Stripe's payment method types: a filter on one the sandbox does not store lists nothing.
_STRIPE_METHOD_TYPES = frozenset(
    {
        "acss_debit", "affirm", "afterpay_clearpay", "alipay", "amazon_pay", "au_becs_debit",
        "bacs_debit", "bancontact", "blik", "boleto", "card", "card_present", "cashapp",
        "customer_balance", "eps", "fpx", "giropay", "grabpay", "ideal", "klarna", "konbini",
        "link", "mobilepay", "multibanco", "oxxo", "p24", "paynow", "paypal", "pix",
        "promptpay", "revolut_pay", "sepa_debit", "sofort", "swish", "twint",
        "us_bank_account", "wechat_pay", "zip",
    }
)  # fmt: skip
_TEST_CARDS = {
    "pm_card_visa": "4242424242424242",
    "pm_card_mastercard": "5555555555554444",
    "pm_card_amex": "378282246310005",
    "pm_card_discover": "6011111111111117",
}


# --- shared helpers ---------------------------------------------------------------------
def _expands(params: Mapping[str, Any], allowed: set[str]) -> set[str]:
    wanted = set(params.get("expand") or ())
    for path in wanted - allowed:
        hint = (
            f" You may want to try expanding 'data.{path}' instead."
            if "data." + path in allowed
            else ""
        )
        raise invalid_request(f"This property cannot be expanded ({path}).{hint}", param="expand")
    return wanted


def _limit(params: Mapping[str, Any]) -> int:
    limit = int(params.get("limit", 10))
    if not 1 <= limit <= 100:
        raise invalid_request(
            f"Invalid limit: must be between 1 and 100, got {limit}", param="limit"
        )
    return limit


def _cursors(params: Mapping[str, Any]) -> tuple[str | None, str | None]:
    after, before = params.get("starting_after"), params.get("ending_before")
    if after and before:
        raise invalid_request(
            "You may only specify one of these parameters: ending_before, starting_after.",
            param="ending_before",
        )
    return after or None, before or None


def _customer(
    call: Call, customer_id: str, *, param: str = "id", allow_deleted: bool = False
) -> CustomerRecord:
    record = call.data.customers.get(customer_id)
    if record is None or (record.deleted and not allow_deleted):
        other = None if record else call.sandbox.other_mode_holding(call.mode, customer_id)
        raise no_such("customer", customer_id, param=param, other_mode=other)
    return record


def _payment_method(call: Call, method_id: str, *, param: str = "id") -> PaymentMethodRecord:
    record = call.data.payment_methods.get(method_id)
    if record is None and call.mode == "test" and method_id in _TEST_CARDS:
        record = _new_card(call, _TEST_CARDS[method_id], None, None, None, {})
    if record is None:
        other = call.sandbox.other_mode_holding(call.mode, method_id)
        raise no_such("PaymentMethod", method_id, param=param, other_mode=other)
    return record


def _new_card(
    call: Call,
    number: str,
    exp_month: int | None,
    exp_year: int | None,
    cvc: str | None,
    metadata: Mapping[str, str],
) -> PaymentMethodRecord:
    today = dt.datetime.fromtimestamp(call.data.now(), tz=dt.UTC)
    month = today.month if exp_month is None else exp_month
    year = today.year + 3 if exp_year is None else exp_year
    digits, year = check_card(number, month, year, this_year=today.year, this_month=today.month)
    card = {
        "brand": card_brand(digits),
        "last4": digits[-4:],
        "exp_month": month,
        "exp_year": year,
        "fingerprint": fingerprint_of(digits),
        "funding": "credit",
    }
    return call.data.add_payment_method(
        {"card": card, "metadata": metadata, "cvc_check": "pass" if cvc else None}
    )


def _render_customer(call: Call, record: CustomerRecord, expand_default: bool) -> dict[str, Any]:
    if record.deleted:
        return deleted_customer_json(record)
    default: dict[str, Any] | str | None = record.default_payment_method
    if expand_default and record.default_payment_method is not None:
        method = call.data.payment_methods.get(record.default_payment_method)
        default = payment_method_json(method, call.livemode) if method else None
    return customer_json(record, call.livemode, default)


def _render_method(
    call: Call, record: PaymentMethodRecord, expand_customer: bool
) -> dict[str, Any]:
    customer: dict[str, Any] | str | None = None
    if expand_customer and record.customer is not None:
        owner = call.data.customers.get(record.customer)
        customer = _render_customer(call, owner, False) if owner else None
    return payment_method_json(record, call.livemode, customer)


def _list_body(url: str, data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def _check_customer_fields(params: Mapping[str, Any], current: Mapping[str, str]) -> None:
    email = params.get("email")
    if email:
        check_email(email)
    if "metadata" in params:
        check_metadata(params["metadata"], current)


def _plain_changes(params: Mapping[str, Any]) -> dict[str, Any]:
    # An empty string unsets a field, as in Stripe.
    changes = {
        name: (params[name] or None)
        for name in ("email", "name", "phone", "description")
        if name in params
    }
    if "balance" in params:
        changes["balance"] = params["balance"]
    return changes


def _requested_default(params: Mapping[str, Any]) -> str | None:
    settings = params.get("invoice_settings")
    if isinstance(settings, dict) and "default_payment_method" in settings:
        return str(settings["default_payment_method"])
    return None


def _check_default_is_attached(
    call: Call, customer_id: str | None, method_id: str, also_attaching: str | None = None
) -> None:
    method = call.data.payment_methods.get(method_id)
    attached = method is not None and method.customer is not None and method.customer == customer_id
    if not attached and method_id != also_attaching:
        raise invalid_request(
            f"The customer does not have a payment method with the ID {method_id}. "
            "The payment method must be attached to the customer.",
            param="invoice_settings[default_payment_method]",
            code="resource_missing",
        )


def _check_attachable(method: PaymentMethodRecord, customer_id: str | None) -> None:
    if method.customer is not None and method.customer != customer_id:
        raise invalid_request(
            "The payment method you provided has already been attached to a customer.",
            param="payment_method",
        )


# --- customers --------------------------------------------------------------------------
def create_customer(call: Call) -> Result:
    params = validate(call.params, {**_CUSTOMER_FIELDS, "payment_method": "str"})
    expand = _expands(params, _CUSTOMER_EXPANDS)
    _check_customer_fields(params, {})
    method = None
    if params.get("payment_method"):
        method = _payment_method(call, params["payment_method"], param="payment_method")
        _check_attachable(method, None)
    default = _requested_default(params)
    if default:
        _check_default_is_attached(call, None, default, method.id if method else None)
    fields = _plain_changes(params)
    fields["metadata"] = merge_metadata({}, params.get("metadata", {}))
    fields["default_payment_method"] = default or None
    record = call.data.add_customer(fields)
    if method is not None:
        call.data.attach(method, record.id)
    return 200, _render_customer(call, record, "invoice_settings.default_payment_method" in expand)


def retrieve_customer(call: Call) -> Result:
    params = validate(call.params, {"expand": "list"})
    expand = _expands(params, _CUSTOMER_EXPANDS)
    record = _customer(call, call.args[0], allow_deleted=True)
    return 200, _render_customer(call, record, "invoice_settings.default_payment_method" in expand)


def update_customer(call: Call) -> Result:
    params = validate(call.params, _CUSTOMER_FIELDS)
    expand = _expands(params, _CUSTOMER_EXPANDS)
    record = _customer(call, call.args[0])
    _check_customer_fields(params, record.metadata)
    changes = _plain_changes(params)
    if "metadata" in params:
        changes["metadata"] = merge_metadata(record.metadata, params["metadata"])
    default = _requested_default(params)
    if default is not None:
        if default:
            _check_default_is_attached(call, record.id, default)
        changes["default_payment_method"] = default or None
    if changes:
        call.data.update_customer(record, changes)
    return 200, _render_customer(call, record, "invoice_settings.default_payment_method" in expand)


def delete_customer(call: Call) -> Result:
    validate(call.params, {})
    record = _customer(call, call.args[0])
    call.data.delete_customer(record)
    return 200, deleted_customer_json(record)


def list_customers(call: Call) -> Result:
    spec = {**_LIST_PAGING, "created": "range", "email": "str", "test_clock": "str"}
    params = validate(call.params, spec)
    expand = _expands(params, {"data." + e for e in _CUSTOMER_EXPANDS})
    limit = _limit(params)
    after_id, before_id = _cursors(params)
    after = (
        _customer(call, after_id, param="starting_after", allow_deleted=True) if after_id else None
    )
    before = (
        _customer(call, before_id, param="ending_before", allow_deleted=True) if before_id else None
    )
    if params.get("test_clock"):
        # No customer of the sandbox is on a test clock.
        return 200, _list_body("/v1/customers", [], False)
    page, has_more = call.data.list_customers(
        limit=limit,
        created=params.get("created"),
        email=params.get("email"),
        starting_after=after,
        ending_before=before,
    )
    expand_default = "data.invoice_settings.default_payment_method" in expand
    data = [_render_customer(call, record, expand_default) for record in page]
    return 200, _list_body("/v1/customers", data, has_more)


def _decode_page(token: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(token.encode() + b"==").decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid_request(
            "Invalid page: pass the next_page value of a previous search result", param="page"
        ) from None


def search_customers(call: Call) -> Result:
    params = validate(
        call.params, {"query": "str", "limit": "int", "page": "str", "expand": "list"}
    )
    expand = _expands(params, {"data." + e for e in _CUSTOMER_EXPANDS} | {"total_count"})
    limit = _limit(params)
    try:
        query = parse_query(str(require(params, "query")))
    except QueryError as error:
        raise invalid_request(str(error), param="query") from None
    found = run_query(query, call.data)
    total = len(found)
    if params.get("page"):
        below = _decode_page(params["page"])
        found = [record for record in found if record.key < below]
    page = found[:limit]
    has_more = len(found) > limit
    next_page = (
        base64.urlsafe_b64encode(str(page[-1].key).encode()).decode().rstrip("=")
        if has_more
        else None
    )
    expand_default = "data.invoice_settings.default_payment_method" in expand
    body: dict[str, Any] = {
        "object": "search_result",
        "data": [_render_customer(call, record, expand_default) for record in page],
        "has_more": has_more,
        "next_page": next_page,
        "url": "/v1/customers/search",
    }
    if "total_count" in expand:
        body["total_count"] = total
    return 200, body


# --- payment methods ----------------------------------------------------------------------
def _page_of_methods(
    call: Call, methods: list[PaymentMethodRecord], params: Mapping[str, Any], url: str
) -> Result:
    expand = _expands(params, {"data.customer"})
    limit = _limit(params)
    after, before = _cursors(params)
    ids = [m.id for m in methods]
    start, end = 0, len(methods)
    for cursor, param in ((after, "starting_after"), (before, "ending_before")):
        if cursor and cursor not in ids:
            _payment_method(call, cursor, param=param)  # 404 when it does not exist at all
            raise invalid_request(
                f"Invalid {param}: {cursor} is not in this list (another customer's or "
                "another type's payment method).",
                param=param,
            )
    if after:
        start = ids.index(after) + 1
    if before:
        end = ids.index(before)
        start = max(0, end - limit)
        page = methods[start:end]
        has_more = start > 0
    else:
        page = methods[start : start + limit]
        has_more = start + limit < end
    data = [_render_method(call, m, "data.customer" in expand) for m in page]
    return 200, _list_body(url, data, has_more)


def _listed_type(params: Mapping[str, Any]) -> str | None:
    """The `type` filter: None (every type, Stripe's default) or one of Stripe's types; a
    type the sandbox never stores lists nothing, as an account without such methods would."""
    kind = params.get("type")
    if kind is not None and kind not in _STRIPE_METHOD_TYPES:
        raise invalid_request(
            f"Invalid type: must be one of {', '.join(sorted(_STRIPE_METHOD_TYPES))}",
            param="type",
        )
    return None if kind is None else str(kind)


def list_customer_methods(call: Call) -> Result:
    params = validate(call.params, {**_LIST_PAGING, "type": "str", "allow_redisplay": "str"})
    kind = _listed_type(params)
    record = _customer(call, call.args[0])
    methods = call.data.payment_methods_of(record.id, kind)
    return _page_of_methods(call, methods, params, f"/v1/customers/{record.id}/payment_methods")


def retrieve_customer_method(call: Call) -> Result:
    params = validate(call.params, {"expand": "list"})
    expand = _expands(params, {"customer"})
    record = _customer(call, call.args[0])
    method = _payment_method(call, call.args[1])
    if method.customer != record.id:
        raise no_such("PaymentMethod", method.id)
    return 200, _render_method(call, method, "customer" in expand)


def list_methods(call: Call) -> Result:
    params = validate(
        call.params,
        {**_LIST_PAGING, "type": "str", "customer": "str", "allow_redisplay": "str"},
    )
    kind = _listed_type(params)
    customer_id = params.get("customer")
    if not customer_id:
        # Stripe lists only a customer's methods; without one the sandbox has nothing to show.
        return 200, _list_body("/v1/payment_methods", [], False)
    record = _customer(call, customer_id, param="customer")
    return _page_of_methods(
        call, call.data.payment_methods_of(record.id, kind), params, "/v1/payment_methods"
    )


def _billing_details(params: Mapping[str, Any]) -> dict[str, Any] | None:
    given = params.get("billing_details")
    if not isinstance(given, dict):
        return None
    given_address = given.get("address")
    address: dict[str, Any] = given_address if isinstance(given_address, dict) else {}
    return {
        "address": {name: address.get(name) for name in _ADDRESS_FIELDS},
        "email": given.get("email"),
        "name": given.get("name"),
        "phone": given.get("phone"),
        "tax_id": None,
    }


def _require_billing(params: Mapping[str, Any], kind: str, names: tuple[str, ...]) -> None:
    # Stripe needs the account holder's name (and for SEPA an email) for a bank debit.
    given = params.get("billing_details")
    for name in names:
        if not isinstance(given, dict) or not given.get(name):
            raise ApiError(
                400,
                f"Missing required param: billing_details[{name}] (needed for {kind}).",
                code="parameter_missing",
                param=f"billing_details[{name}]",
            )


def _bank_fingerprint(*parts: str) -> str:
    return fingerprint_of("bank:" + ":".join(parts))


def _new_sepa_debit(call: Call, params: Mapping[str, Any]) -> PaymentMethodRecord:
    sepa = require(params, "sepa_debit")
    iban = check_iban(str(require(sepa, "iban")))
    _require_billing(params, "sepa_debit", ("name", "email"))
    country = iban[:2]
    details = {
        # The national bank code sits right after the check digits; its length varies by
        # country: eight characters covers Germany, the usual test IBAN.
        "bank_code": iban[4:12] if country == "DE" else iban[4:9],
        "branch_code": "",
        "country": country,
        "fingerprint": _bank_fingerprint(iban),
        "generated_from": {"charge": None, "setup_attempt": None},
        "last4": iban[-4:],
    }
    return call.data.add_payment_method(
        {
            "type": "sepa_debit",
            "sepa_debit": details,
            "metadata": params.get("metadata") or {},
            "billing_details": _billing_details(params),
        }
    )


def _new_us_bank_account(call: Call, params: Mapping[str, Any]) -> PaymentMethodRecord:
    bank = require(params, "us_bank_account")
    account_number = str(require(bank, "account_number"))
    routing_number = str(require(bank, "routing_number"))
    check_account_number(account_number)
    check_routing_number(routing_number)
    holder = bank.get("account_holder_type", "individual")
    account_type = bank.get("account_type", "checking")
    for name, value, allowed in (
        ("account_holder_type", holder, ("individual", "company")),
        ("account_type", account_type, ("checking", "savings")),
    ):
        if value not in allowed:
            raise invalid_request(
                f"Invalid us_bank_account[{name}]: must be one of {', '.join(allowed)}",
                param=f"us_bank_account[{name}]",
            )
    _require_billing(params, "us_bank_account", ("name",))
    details = {
        "account_holder_type": holder,
        "account_type": account_type,
        "bank_name": "STRIPE TEST BANK",
        "financial_connections_account": None,
        "fingerprint": _bank_fingerprint(routing_number, account_number),
        "last4": account_number[-4:],
        "networks": {"preferred": "ach", "supported": ["ach"]},
        "routing_number": routing_number,
        "status_details": {},
    }
    return call.data.add_payment_method(
        {
            "type": "us_bank_account",
            "us_bank_account": details,
            "metadata": params.get("metadata") or {},
            "billing_details": _billing_details(params),
        }
    )


def create_method(call: Call) -> Result:
    spec = {
        "type": "str",
        "card": {"number": "str", "exp_month": "int", "exp_year": "int", "cvc": "str"},
        "sepa_debit": {"iban": "str"},
        "us_bank_account": {
            "account_number": "str",
            "routing_number": "str",
            "account_holder_type": "str",
            "account_type": "str",
        },
        "billing_details": _BILLING_SPEC,
        "metadata": "map",
        "expand": "list",
    }
    params = validate(call.params, spec)
    expand = _expands(params, {"customer"})
    kind = require(params, "type")
    if kind not in PAYMENT_METHOD_TYPES:
        raise invalid_request(
            f"Invalid type: the sandbox creates {', '.join(PAYMENT_METHOD_TYPES)} payment "
            f"methods, got {kind!r}",
            param="type",
        )
    for other in PAYMENT_METHOD_TYPES:
        if other != kind and other in params:
            raise invalid_request(
                f"Received {other} parameters for a payment method of type {kind}.",
                param=other,
            )
    metadata = params.get("metadata", {})
    check_metadata(metadata, {})
    params = {**params, "metadata": merge_metadata({}, metadata)}
    if kind == "sepa_debit":
        return 200, _render_method(call, _new_sepa_debit(call, params), "customer" in expand)
    if kind == "us_bank_account":
        return 200, _render_method(call, _new_us_bank_account(call, params), "customer" in expand)
    card = require(params, "card")
    number = require(card, "number") if isinstance(card, dict) else ""
    for name in ("exp_month", "exp_year"):
        if name not in card:
            raise ApiError(
                400,
                f"Missing required param: card[{name}].",
                code="parameter_missing",
                param=f"card[{name}]",
            )
    record = _new_card(
        call,
        str(number),
        card["exp_month"],
        card["exp_year"],
        card.get("cvc"),
        params["metadata"],
    )
    billing = _billing_details(params)
    if billing is not None:
        record.extra = {"billing_details": billing}
    return 200, _render_method(call, record, "customer" in expand)


def retrieve_method(call: Call) -> Result:
    params = validate(call.params, {"expand": "list"})
    expand = _expands(params, {"customer"})
    return 200, _render_method(call, _payment_method(call, call.args[0]), "customer" in expand)


def update_method(call: Call) -> Result:
    """Stripe updates a payment method's metadata and billing details, and a card's expiry;
    the method must be attached to a customer."""
    params = validate(
        call.params,
        {
            "metadata": "map",
            "billing_details": _BILLING_SPEC,
            "card": {"exp_month": "int", "exp_year": "int"},
            "allow_redisplay": "str",
            "expand": "list",
        },
    )
    expand = _expands(params, {"customer"})
    method = _payment_method(call, call.args[0])
    if method.customer is None:
        raise invalid_request(
            "You must save this PaymentMethod to a customer before you can update it."
        )
    changes: dict[str, Any] = {}
    card = params.get("card")
    if card:
        if method.type != "card":
            raise invalid_request(
                f"Received card parameters for a payment method of type {method.type}.",
                param="card",
            )
        today = dt.datetime.fromtimestamp(call.data.now(), tz=dt.UTC)
        month = int(card.get("exp_month", method.exp_month))
        year = int(card.get("exp_year", method.exp_year))
        year = check_expiry(month, year, this_year=today.year, this_month=today.month)
        changes.update(exp_month=month, exp_year=year)
    if "metadata" in params:
        check_metadata(params["metadata"], method.metadata)
        changes["metadata"] = merge_metadata(method.metadata, params["metadata"])
    if params.get("billing_details"):
        current = (method.extra or {}).get("billing_details") or {}
        given = params["billing_details"]
        address = {**(current.get("address") or {}), **(given.get("address") or {})}
        merged = _billing_details({"billing_details": {**current, **given, "address": address}})
        changes["billing_details"] = merged
    if changes:
        call.data.update_payment_method(method, changes)
    return 200, _render_method(call, method, "customer" in expand)


def attach_method(call: Call) -> Result:
    params = validate(call.params, {"customer": "str", "expand": "list"})
    expand = _expands(params, {"customer"})
    customer = _customer(call, str(require(params, "customer")), param="customer")
    method = _payment_method(call, call.args[0])
    _check_attachable(method, customer.id)
    if method.customer is None:
        call.data.attach(method, customer.id)
    return 200, _render_method(call, method, "customer" in expand)


def detach_method(call: Call) -> Result:
    params = validate(call.params, {"expand": "list"})
    _expands(params, {"customer"})
    method = _payment_method(call, call.args[0])
    if method.customer is None:
        raise invalid_request(
            "The payment method you provided is not attached to a customer so detachment is "
            "impossible."
        )
    call.data.detach(method)
    return 200, _render_method(call, method, False)


# --- subscriptions: create, retrieve, cancel, list --------------------------------------
# `ended` lists the subscriptions that will never bill again; `all` every status.
_SUBSCRIPTION_FILTERS = SUBSCRIPTION_STATUSES | {"all", "ended"}
_PAYMENT_BEHAVIORS = {
    "allow_incomplete",
    "default_incomplete",
    "error_if_incomplete",
    "pending_if_incomplete",
}


def _trial_end(call: Call, params: Mapping[str, Any]) -> int | None:
    """The trial's end from `trial_period_days` or `trial_end` (a time, or `now`)."""
    if "trial_period_days" in params and "trial_end" in params:
        raise invalid_request(
            "You may only specify one of these parameters: trial_end, trial_period_days.",
            param="trial_end",
        )
    if "trial_period_days" in params:
        days = int(params["trial_period_days"])
        if not 1 <= days <= 730:
            raise invalid_request(
                "Invalid trial_period_days: must be between 1 and 730", param="trial_period_days"
            )
        return call.data.now() + days * 86_400
    raw = params.get("trial_end")
    if raw is None or raw == "now":
        return None
    if not str(raw).isdigit() or int(raw) <= call.data.now():
        raise invalid_request(
            "Invalid timestamp: must be an integer Unix timestamp in the future, or 'now'.",
            param="trial_end",
        )
    return int(raw)


def create_subscription(call: Call) -> Result:
    # `items[0][price]=...` arrives as {"0": {"price": ...}}: checked here, not by `validate`.
    raw_items = call.params.get("items")
    params = validate(
        {k: v for k, v in call.params.items() if k != "items"},
        {
            "customer": "str",
            "metadata": "map",
            "trial_period_days": "int",
            "trial_end": "str",
            "payment_behavior": "str",
        },
    )
    customer = _customer(call, str(require(params, "customer")), param="customer")
    if not isinstance(raw_items, dict) or not all(k.isdigit() for k in raw_items):
        raise invalid_request("Missing required param: items.", param="items")
    items = [raw_items[k] for k in sorted(raw_items, key=int)]
    prices: list[tuple[str, int]] = []
    for index, item in enumerate(items):
        price = item.get("price") if isinstance(item, dict) else None
        if not isinstance(price, str) or not price:
            raise invalid_request(
                f"Missing required param: items[{index}][price].", param=f"items[{index}][price]"
            )
        quantity = str(item.get("quantity", "1"))
        if not quantity.isdigit() or int(quantity) < 1:
            raise invalid_request(
                f"Invalid integer: {quantity!r}", param=f"items[{index}][quantity]"
            )
        prices.append((price, int(quantity)))
    if not prices:
        raise invalid_request("Missing required param: items.", param="items")
    behavior = params.get("payment_behavior", "allow_incomplete")
    if behavior not in _PAYMENT_BEHAVIORS:
        raise invalid_request(
            f"Invalid payment_behavior: must be one of {', '.join(sorted(_PAYMENT_BEHAVIORS))}",
            param="payment_behavior",
        )
    trial_end = _trial_end(call, params)
    metadata = params.get("metadata", {})
    check_metadata(metadata, {})
    # A trial starts without a payment; `default_incomplete` waits for the first one.
    if trial_end is not None:
        status = "trialing"
    elif behavior == "default_incomplete":
        status = "incomplete"
    else:
        status = "active"
    record = call.data.add_subscription(
        customer.id, prices, merge_metadata({}, metadata), status=status, trial_end=trial_end
    )
    return 200, subscription_json(record, call.livemode)


def _subscription(call: Call, subscription_id: str) -> SubscriptionRecord:
    record = call.data.subscriptions.get(subscription_id)
    if record is None:
        other = call.sandbox.other_mode_holding(call.mode, subscription_id)
        raise no_such("subscription", subscription_id, other_mode=other)
    return record


def retrieve_subscription(call: Call) -> Result:
    params = validate(call.params, {"expand": "list"})
    _expands(params, set())
    return 200, subscription_json(_subscription(call, call.args[0]), call.livemode)


def cancel_subscription(call: Call) -> Result:
    params = validate(call.params, {"expand": "list", "invoice_now": "bool", "prorate": "bool"})
    _expands(params, set())
    record = _subscription(call, call.args[0])
    if record.status in TERMINAL_SUBSCRIPTION_STATUSES:
        raise invalid_request(
            f"A canceled subscription can only update its cancellation_details and metadata. "
            f"This subscription is {record.status}.",
        )
    call.data.set_subscription_status(record, "canceled")
    return 200, subscription_json(record, call.livemode)


def list_subscriptions(call: Call) -> Result:
    params = validate(call.params, {**_LIST_PAGING, "customer": "str", "status": "str"})
    _expands(params, set())
    limit = _limit(params)
    status = params.get("status")
    if status is not None and status not in _SUBSCRIPTION_FILTERS:
        raise invalid_request(
            f"Invalid status: must be one of {', '.join(sorted(_SUBSCRIPTION_FILTERS))}",
            param="status",
        )
    customer_id = params.get("customer")
    if customer_id:
        records = call.data.subscriptions_of(customer_id)
    else:
        records = sorted(call.data.subscriptions.values(), key=lambda r: r.created, reverse=True)
    # Stripe's default leaves out canceled subscriptions only.
    if status is None:
        records = [r for r in records if r.status != "canceled"]
    elif status == "ended":
        records = [r for r in records if r.status in TERMINAL_SUBSCRIPTION_STATUSES]
    elif status != "all":
        records = [r for r in records if r.status == status]
    after, _ = _cursors(params)
    ids = [r.id for r in records]
    start = ids.index(after) + 1 if after in ids else 0
    page = records[start : start + limit]
    data = [subscription_json(r, call.livemode) for r in page]
    return 200, _list_body("/v1/subscriptions", data, start + limit < len(records))


# --- events -------------------------------------------------------------------------------
def _event(call: Call, event_id: str, *, param: str = "id") -> EventRecord:
    event = call.data.events.get(event_id)
    if event is None:
        # Unknown, of the other mode, not yet listed (late), or past the 30 days.
        raise no_such("event", event_id, param=param)
    return event


def list_events(call: Call) -> Result:
    params = validate(
        call.params,
        {
            **_LIST_PAGING,
            "created": "range",
            "type": "str",
            "types": "list",
            "delivery_success": "bool",
        },
    )
    _expands(params, set())
    limit = _limit(params)
    if "type" in params and "types" in params:
        raise invalid_request(
            "You may only specify one of these parameters: type, types.", param="types"
        )
    types = params.get("types")
    if types is not None and len(types) > MAX_TYPES:
        raise invalid_request(
            f"Invalid types: must contain at most {MAX_TYPES} event types, got {len(types)}",
            param="types",
        )
    after_id, before_id = _cursors(params)
    after = _event(call, after_id, param="starting_after") if after_id else None
    before = _event(call, before_id, param="ending_before") if before_id else None
    if params.get("delivery_success") is False:
        # No webhook endpoints: no event is pending or failed delivery.
        return 200, _list_body("/v1/events", [], False)
    page, has_more = call.data.events.page(
        limit=limit,
        created=params.get("created"),
        type_pattern=params.get("type") or None,
        types=types,
        starting_after=after,
        ending_before=before,
    )
    data = [event_json(event, call.livemode) for event in page]
    return 200, _list_body("/v1/events", data, has_more)


def retrieve_event(call: Call) -> Result:
    params = validate(call.params, {"expand": "list"})
    _expands(params, set())
    return 200, event_json(_event(call, call.args[0]), call.livemode)


def _route(
    method: str, template: str, handler: Callable[[Call], Result], is_search: bool = False
) -> Route:
    pattern = re.escape(template).replace(r"\{id\}", r"([^/]+)").replace(r"\{pm\}", r"([^/]+)")
    return Route(method, template, re.compile(f"^{pattern}$"), handler, is_search)


# Order matters: `/v1/customers/search` must win over `/v1/customers/{id}`.
ROUTES: tuple[Route, ...] = (
    _route("GET", "/v1/customers/search", search_customers, is_search=True),
    _route("GET", "/v1/customers", list_customers),
    _route("POST", "/v1/customers", create_customer),
    _route("GET", "/v1/customers/{id}", retrieve_customer),
    _route("POST", "/v1/customers/{id}", update_customer),
    _route("DELETE", "/v1/customers/{id}", delete_customer),
    _route("GET", "/v1/customers/{id}/payment_methods", list_customer_methods),
    _route("GET", "/v1/customers/{id}/payment_methods/{pm}", retrieve_customer_method),
    _route("GET", "/v1/payment_methods", list_methods),
    _route("POST", "/v1/payment_methods", create_method),
    _route("GET", "/v1/payment_methods/{id}", retrieve_method),
    _route("POST", "/v1/payment_methods/{id}", update_method),
    _route("POST", "/v1/payment_methods/{id}/attach", attach_method),
    _route("POST", "/v1/payment_methods/{id}/detach", detach_method),
    _route("GET", "/v1/subscriptions", list_subscriptions),
    _route("POST", "/v1/subscriptions", create_subscription),
    _route("GET", "/v1/subscriptions/{id}", retrieve_subscription),
    _route("DELETE", "/v1/subscriptions/{id}", cancel_subscription),
    _route("GET", "/v1/events", list_events),
    _route("GET", "/v1/events/{id}", retrieve_event),
)


def match_route(method: str, path: str) -> tuple[Route, tuple[str, ...]] | None:
    for route in ROUTES:
        if route.method == method:
            found = route.pattern.match(path)
            if found:
                return route, found.groups()
    return None
