"""The aiohttp application: auth, rate limits, faults, latency, idempotency, logging, and
the admin routes under `/_sandbox/`, in front of the endpoint handlers in api.py."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import random
import secrets
import string
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from sandbox import api
from sandbox.apierrors import STRIPE_RATE_LIMIT_REASONS, ApiError, rate_limited
from sandbox.faults import Fault, FaultInjector
from sandbox.history import add_history
from sandbox.loading import seed_store
from sandbox.objects import API_VERSION
from sandbox.params import parse_form
from sandbox.ratelimit import RateLimits, SlidingWindowLimiter
from sandbox.requestlog import RequestLog, RequestRecord
from sandbox.store import IdempotentResult, ModeStore, SandboxStore

__all__ = ["ADMIN_PREFIX", "SandboxState", "build_app"]

ADMIN_PREFIX = "/_sandbox/"
_REQUEST_ID_ALPHABET = string.ascii_letters + string.digits
_MAX_BODY = 1 << 30  # admin bulk loads can be large

_NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)


@dataclass
class SandboxState:
    """Everything a request touches; attributes are read per request, so tests can change
    limits, latency and fault rates while the server runs."""

    store: SandboxStore = field(default_factory=SandboxStore)
    request_log: RequestLog = field(default_factory=RequestLog)
    faults: FaultInjector = field(default_factory=FaultInjector)
    limits: RateLimits = field(default_factory=RateLimits)
    limiter: SlidingWindowLimiter = field(default_factory=SlidingWindowLimiter)
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    random: random.Random = field(default_factory=random.Random)
    # Keys Stripe would refuse although well-formed (rolled or deleted in the dashboard).
    revoked_keys: set[str] = field(default_factory=set)
    # Restricted keys granted read access only: writes answer 403 as Stripe does.
    read_only_keys: set[str] = field(default_factory=set)
    in_flight: int = 0  # API requests between arrival and answer, on the loop's thread
    max_in_flight: int = 0

    def delay_seconds(self) -> float:
        jitter = self.random.uniform(0.0, self.jitter_ms) if self.jitter_ms > 0 else 0.0
        return max(0.0, self.latency_ms + jitter) / 1000.0


def _request_id() -> str:
    return "req_" + "".join(secrets.choice(_REQUEST_ID_ALPHABET) for _ in range(14))


def _masked(key: str) -> str:
    # Stripe's style: the prefix, stars, the last four; never the whole key.
    prefix = key[:8] if key[:3] in ("sk_", "rk_", "pk_") else ""
    if len(key) < len(prefix) + 8:
        return prefix + "*" * max(0, len(key) - len(prefix))
    return prefix + "*" * (len(key) - len(prefix) - 4) + key[-4:]


def _key_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "").strip()
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[0]
    return None


# As stripe-mock: any secret or restricted key prefix followed by anything is accepted,
# `sk_test_123` included; the prefix alone picks the mode.
_KEY_MODES = {"sk_test_": "test", "rk_test_": "test", "sk_live_": "live", "rk_live_": "live"}


def _mode_of(request: web.Request) -> str:
    key = _key_of(request)
    if not key:
        raise ApiError(401, _NO_KEY)
    mode = _KEY_MODES.get(key[:8])
    if mode is None or len(key) == 8 or any(c.isspace() for c in key):
        raise ApiError(401, f"Invalid API Key provided: {_masked(key)}")
    return mode


def _json_response(
    status: int, body: dict[str, Any] | bytes, request_id: str, extra: dict[str, str] | None = None
) -> web.Response:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Request-Id": request_id, "Stripe-Version": API_VERSION}
    if extra:
        headers.update(extra)
    return web.Response(
        body=payload, status=status, headers=headers, content_type="application/json"
    )


def _redacted(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters as logged: card numbers cut to their last four, CVCs hidden."""
    card = params.get("card")
    if not isinstance(card, dict) or not ({"number", "cvc"} & card.keys()):
        return params
    safe = dict(card)
    if isinstance(safe.get("number"), str):
        safe["number"] = "************" + safe["number"][-4:]
    if "cvc" in safe:
        safe["cvc"] = "***"
    return {**params, "card": safe}


def _fingerprint(method: str, path: str, params: dict[str, Any]) -> str:
    text = json.dumps([method, path, params], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class _Api:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX):
            return await _admin(self.state, request)
        arrived = time.time()
        request_id = _request_id()
        idempotency_key = request.headers.get("Idempotency-Key")
        record: dict[str, Any] = {
            "time": arrived,
            "mode": None,
            "method": request.method,
            "path": request.path,
            "params": {},
            "status": 0,
            "idempotency_key": idempotency_key,
            "request_id": request_id,
            "applied": False,
            "replayed": False,
        }
        self.state.in_flight += 1
        self.state.max_in_flight = max(self.state.max_in_flight, self.state.in_flight)
        try:
            response = await self._answer(request, record)
        except ApiError as error:
            headers = dict(error.headers)
            if idempotency_key and request.method == "POST":
                headers["Idempotency-Key"] = idempotency_key
            response = _json_response(error.status, error.body(), request_id, headers)
        finally:
            self.state.in_flight -= 1
        record["status"] = response.status if not isinstance(response, _Dropped) else 0
        self.state.request_log.append(RequestRecord(**record))
        return response

    def _check_key_permissions(self, request: web.Request) -> None:
        key = _key_of(request) or ""
        if key in self.state.revoked_keys:
            raise ApiError(401, f"Expired API Key provided: {_masked(key)}")
        if key in self.state.read_only_keys and request.method in ("POST", "DELETE"):
            raise ApiError(
                403,
                f"The provided key '{_masked(key)}' does not have the required permissions for "
                "this endpoint on account 'acct_sandbox'. Having the 'rak_customer_write' "
                "permission would allow this request to continue.",
            )

    async def _answer(self, request: web.Request, record: dict[str, Any]) -> web.StreamResponse:
        state = self.state
        pairs = list(request.query.items())
        if request.method == "POST" and request.body_exists:
            form = await request.post()
            pairs.extend((k, v) for k, v in form.items() if isinstance(v, str))
        params = parse_form(pairs)
        record["params"] = _redacted(params)
        mode = _mode_of(request)
        record["mode"] = mode
        self._check_key_permissions(request)
        found = api.match_route(request.method, request.path)
        if found is None:
            raise ApiError(
                404,
                f"Unrecognized request URL ({request.method}: {request.path}). Please see "
                "https://stripe.com/docs or we can help at https://support.stripe.com/.",
            )
        route, args = found
        limits = state.limits
        if limits.enabled:
            reason = state.limiter.try_acquire(
                limits.buckets(mode, f"{route.method} {route.template}", route.is_search)
            )
            if reason is not None:
                raise rate_limited(reason)
        fault = state.faults.decide(request.method, request.path, route.template)
        if fault is not None and not fault.after_apply:
            # Refused before executing (a load balancer's error): nothing stored for a key.
            if fault.drops:
                return _drop(request)
            if fault.status == 429:
                raise rate_limited(state.faults.rate_limit_reason)
            raise _injected_error(fault.status)
        delay = state.delay_seconds()
        if delay > 0:
            await asyncio.sleep(delay)
        # Stripe applies idempotency keys to POST only: GET and DELETE ignore them.
        key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
        return self._execute(route, args, mode, params, key, request, record, fault)

    def _execute(
        self,
        route: api.Route,
        args: tuple[str, ...],
        mode: str,
        params: dict[str, Any],
        key: str | None,
        request: web.Request,
        record: dict[str, Any],
        fault: Fault | None,
    ) -> web.StreamResponse:
        """Run the endpoint (or replay the key's stored result), store what Stripe would
        store for the key, then apply an after-apply `fault` to the answer."""
        store = self.state.store
        request_id = str(record["request_id"])
        with store.lock:
            data = store.mode(mode)
            fingerprint = ""
            echo = {"Idempotency-Key": key} if key else {}
            if key is not None:
                if len(key) > 255:
                    raise ApiError(
                        400,
                        f"Invalid idempotency key: it has {len(key)} characters, "
                        "the maximum is 255.",
                        type_="idempotency_error",
                    )
                fingerprint = _fingerprint(request.method, request.path, params)
                seen = data.idempotent_result(key)
                if seen is not None:
                    if seen.fingerprint != fingerprint:
                        raise ApiError(
                            400,
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{key}' if you meant to execute a different request.",
                            type_="idempotency_error",
                            headers=echo,
                        )
                    record["replayed"] = True
                    if fault is not None:
                        return _fail_after(request, fault, request_id, echo)
                    replayed = {**echo, "Idempotent-Replayed": "true"}
                    if seen.request_id:
                        replayed["Original-Request"] = seen.request_id
                    return _json_response(seen.status, seen.body, request_id, replayed)
            call = api.Call(store, data, mode, params, args, request_id, key)
            # One request, one write: its events carry its id and key (reads emit none).
            scope = (
                contextlib.nullcontext()
                if request.method == "GET"
                else data.events.write(request_id, key)
            )
            try:
                with scope:
                    status, body = route.handler(call)
            except ApiError as error:
                # Stripe saves a result once an endpoint ran, but not for failed validation.
                ran = error.status != 400
                if fault is not None:
                    stored = _stored_after(fault, error.status, json.dumps(error.body()).encode())
                    if key is not None and ran:
                        data.remember(key, self._result(data, fingerprint, stored, request_id))
                    return _fail_after(request, fault, request_id, echo)
                if key is not None and ran:
                    stored = (error.status, json.dumps(error.body()).encode())
                    data.remember(key, self._result(data, fingerprint, stored, request_id))
                error.headers.update(echo)
                raise
            record["applied"] = True
            payload = json.dumps(body).encode()
            stored = (status, payload) if fault is None else _stored_after(fault, status, payload)
            if key is not None:
                data.remember(key, self._result(data, fingerprint, stored, request_id))
        if fault is not None:
            return _fail_after(request, fault, request_id, echo)
        return _json_response(status, payload, request_id, echo)

    @staticmethod
    def _result(
        data: ModeStore, fingerprint: str, answer: tuple[int, bytes], request_id: str
    ) -> IdempotentResult:
        return IdempotentResult(fingerprint, answer[0], answer[1], data.time(), request_id)


_INJECTED_MESSAGE = "An unknown error occurred (injected by the sandbox)."


def _injected_error(status: int) -> ApiError:
    # The same body before and after the write applied: a client cannot tell them apart,
    # as with Stripe, and must read the object to learn whether the write happened.
    return ApiError(status, _INJECTED_MESSAGE, type_="api_error")


def _stored_after(fault: Fault, status: int, payload: bytes) -> tuple[int, bytes]:
    """What Stripe stores for the key when `fault` strikes after the endpoint answered
    (status, payload): the 5xx the client got, or, for a dropped connection, the answer."""
    if fault.drops:
        return status, payload
    return fault.status, json.dumps(_injected_error(fault.status).body()).encode()


def _fail_after(
    request: web.Request, fault: Fault, request_id: str, echo: dict[str, str]
) -> web.StreamResponse:
    if fault.drops:
        return _drop(request)
    error = _injected_error(fault.status)
    return _json_response(error.status, error.body(), request_id, echo)


def _drop(request: web.Request) -> web.StreamResponse:
    if request.transport is not None:
        request.transport.close()
    return _Dropped()


class _Dropped(web.Response):
    """Answers a request whose connection the sandbox already closed on purpose; aiohttp
    finds the transport gone and writes nothing."""

    def __init__(self) -> None:
        super().__init__(status=599)


# --- admin routes ---------------------------------------------------------------------------
async def _admin(state: SandboxState, request: web.Request) -> web.StreamResponse:
    route = request.path[len(ADMIN_PREFIX) :].strip("/")
    method = request.method
    body: dict[str, Any] = {}
    if method == "POST" and request.body_exists:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _admin_error(f"{request.path}: the body must be a JSON object")
    try:
        result = _admin_action(state, method, route, body, request)
    except (ValueError, KeyError, TypeError) as error:
        return _admin_error(f"{method} {request.path}: {error}")
    if result is None:
        return _admin_error(f"unknown admin route {method} {request.path}", status=404)
    return web.json_response(result)


def _admin_error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status)


def _admin_action(
    state: SandboxState, method: str, route: str, body: dict[str, Any], request: web.Request
) -> dict[str, Any] | None:
    store = state.store
    if (method, route) == ("GET", "health"):
        return {"ok": True, "customers": {m: store.count(m) for m in ("test", "live")}}
    if (method, route) == ("GET", "requests"):
        entries = state.request_log.entries()
        limit = int(request.query.get("limit", len(entries)))
        data = [entry.to_json() for entry in entries[len(entries) - limit :]] if limit else []
        return {"object": "list", "count": len(entries), "data": data}
    if (method, route) == ("DELETE", "requests"):
        state.request_log.clear()
        return {"cleared": True}
    if (method, route) == ("POST", "reset"):
        store.reset()
        state.request_log.clear()
        state.limiter.clear()
        state.faults.clear()
        state.max_in_flight = state.in_flight
        return {"reset": True}
    if (method, route) == ("POST", "seed"):
        mode = str(body.get("mode", "test"))
        count = seed_store(store, mode, int(body["customers"]), seed=int(body.get("seed", 0)))
        return {"mode": mode, "customers": count[0], "payment_methods": count[1]}
    if (method, route) == ("POST", "load"):
        mode = str(body.get("mode", "test"))
        history = body.get("events", False)
        if not isinstance(history, bool):
            raise ValueError(f"events must be true or false, got {history!r}")
        customers = body.get("customers", [])
        payment_methods = body.get("payment_methods", [])
        subscriptions = body.get("subscriptions", [])
        with store.lock:  # no request sees the records before their history
            store.bulk_load(mode, customers, payment_methods, subscriptions)
            added = (
                add_history(store.mode(mode), customers, payment_methods, subscriptions)
                if history
                else 0
            )
        loaded: dict[str, Any] = {"mode": mode, "customers": store.count(mode)}
        if history:
            loaded["events"] = added
        return loaded
    if route == "events" or route.startswith("events/") or route == "card_updater":
        return _events_admin(state, method, route, body)
    if (method, route) == ("POST", "faults"):
        after_apply = body.get("after_apply", False)
        if not isinstance(after_apply, bool):
            raise ValueError(f"after_apply must be true or false, got {after_apply!r}")
        state.faults.fail_next(
            str(body["method"]),
            str(body["path"]),
            int(body.get("count", 1)),
            int(body.get("status", 500)),
            after_apply=after_apply,
        )
        return {"scheduled": True}
    if route == "clock" and method in ("GET", "POST"):
        if "now" in body and "advance" in body:
            raise ValueError("give either now or advance, not both")
        if "now" in body:
            store.clock.set(float(body["now"]))
        if "advance" in body:
            store.clock.advance(float(body["advance"]))
        return {"now": store.clock.now(), "offset": store.clock.offset}
    if route == "config" and method in ("GET", "POST"):
        _apply_config(state, body)
        return {
            "latency_ms": state.latency_ms,
            "jitter_ms": state.jitter_ms,
            "limits": asdict(state.limits),
            "faults": {
                "error_rate": state.faults.error_rate,
                "rate_limit_rate": state.faults.rate_limit_rate,
                "drop_rate": state.faults.drop_rate,
                "after_apply_share": state.faults.after_apply_share,
                "rate_limit_reason": state.faults.rate_limit_reason,
            },
        }
    return None


def _events_admin(
    state: SandboxState, method: str, route: str, body: dict[str, Any]
) -> dict[str, Any] | None:
    """The event controls: what each mode holds, and how the next events go wrong."""
    store = state.store
    faults = store.event_faults
    if (method, route) == ("GET", "events"):
        with store.lock:
            modes = {mode: store.mode(mode).events.stats() for mode in ("test", "live")}
        return {**modes, "faults": faults.settings()}
    if (method, route) == ("POST", "card_updater"):
        method_id = str(body["payment_method"])
        last4 = body.get("last4")
        record = store.update_card(
            str(body.get("mode", "test")),
            method_id,
            exp_month=int(body["exp_month"]),
            exp_year=int(body["exp_year"]),
            last4=None if last4 is None else str(last4),
        )
        return {
            "payment_method": record.id,
            "exp_month": record.exp_month,
            "exp_year": record.exp_year,
        }
    if method != "POST":
        return None
    if route == "events/delay":
        faults.delay_next(float(body["seconds"]), _count(body))
    elif route == "events/backdate":
        faults.backdate_next(float(body["seconds"]), _count(body))
    elif route == "events/drop":
        faults.drop_next(_count(body), writes=body.get("writes", False))
    elif route == "events/config":
        faults.configure(body)
    elif route == "events/clear":
        faults.clear()
    else:
        return None
    return {"faults": faults.settings()}


def _count(body: dict[str, Any]) -> int:
    count = body.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool):
        raise ValueError(f"count must be a whole number, got {count!r}")
    return count


def _apply_config(state: SandboxState, body: dict[str, Any]) -> None:
    if "latency_ms" in body:
        state.latency_ms = float(body["latency_ms"])
    if "jitter_ms" in body:
        state.jitter_ms = float(body["jitter_ms"])
    for name, value in dict(body.get("limits", {})).items():
        if not hasattr(state.limits, name):
            raise ValueError(f"unknown limit {name!r}")
        setattr(state.limits, name, bool(value) if name == "enabled" else float(value))
    for name, value in dict(body.get("faults", {})).items():
        if name == "rate_limit_reason":
            state.faults.rate_limit_reason = _rate_limit_reason(value)
            continue
        if name not in ("error_rate", "rate_limit_rate", "drop_rate", "after_apply_share"):
            raise ValueError(f"unknown fault setting {name!r}")
        setattr(state.faults, name, float(value))


def _rate_limit_reason(value: Any) -> str:
    if value not in ("", *STRIPE_RATE_LIMIT_REASONS):
        raise ValueError(
            f"unknown rate_limit_reason {value!r}: one of {', '.join(STRIPE_RATE_LIMIT_REASONS)}"
            ' or "" (a 429 without the header)'
        )
    return str(value)


def build_app(state: SandboxState) -> web.Application:
    app = web.Application(client_max_size=_MAX_BODY)
    app.router.add_route("*", "/{tail:.*}", _Api(state).handle)
    return app
