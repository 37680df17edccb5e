"""The Stripe boundary. Importing it imports the Stripe SDK without its async clients.

The SDK picks its default async HTTP client when it is imported, by importing httpx or
aiohttp if installed (aiohttp is, with the `sandbox` extra). This project only ever hands
the SDK its own synchronous client (reconcile.stripe_api.http), so that probe would only
add aiohttp and its dependencies to every run's start, before its first request. While the
SDK is imported here, those two names are marked absent (`None` in `sys.modules` makes an
import raise ImportError); the SDK then falls back to its stand-in that raises if an async
request is ever made. Nothing else is affected: the marks go once the SDK is in, and a
process that already loaded either library (the sandbox's) keeps it for the SDK too.
"""

from __future__ import annotations

from reconcile.optional_imports import import_without

# Only the SDK's optional async clients: requests, its sync client, is imported as usual.
import_without("stripe", absent=("httpx", "aiohttp"))
