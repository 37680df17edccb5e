"""The endpoint of a request: its method and path template, the key of per-endpoint limits."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["endpoint_of", "reads_of"]

# Top-level namespaces that come before a collection name (/v1/test_helpers/test_clocks/{id}).
_NAMESPACES = frozenset(
    {
        "apps",
        "billing",
        "billing_portal",
        "checkout",
        "climate",
        "entitlements",
        "financial_connections",
        "forwarding",
        "identity",
        "issuing",
        "radar",
        "reporting",
        "sigma",
        "tax",
        "terminal",
        "test_helpers",
        "treasury",
    }
)
# Words that stand where an id would, but are part of the path.
_ACTIONS = frozenset({"search", "upcoming", "preview"})
# Stripe ids: a short lowercase prefix, an underscore, then letters and digits.
_STRIPE_ID = re.compile(r"^[a-z]{1,8}_[A-Za-z0-9]*[A-Z0-9][A-Za-z0-9]*$")


def endpoint_of(method: str, url: str) -> str:
    """``("get", "https://api.stripe.com/v1/customers/cus_1?x=1")`` -> ``"GET /v1/customers/{id}"``.

    Stripe paths alternate collection and id after the version (and any namespace);
    anything in an id position that is not a known action word is an id.
    """
    segments = [part for part in urlsplit(url).path.split("/") if part]
    template: list[str] = []
    expect_id = False
    for index, segment in enumerate(segments):
        if index == 0 or (not expect_id and segment in _NAMESPACES and template[-1] == "v1"):
            template.append(segment)
            continue
        if (expect_id and segment not in _ACTIONS) or _STRIPE_ID.match(segment):
            template.append("{id}")
            expect_id = False
        else:
            template.append(segment)
            expect_id = segment not in _ACTIONS
    return f"{method.upper()} /{'/'.join(template)}"


def reads_of(requests_by_endpoint: Mapping[str, int]) -> int:
    """GET requests (keyed by `endpoint_of`): what Stripe counts against the read budget."""
    return sum(n for endpoint, n in requests_by_endpoint.items() if endpoint.startswith("GET "))
