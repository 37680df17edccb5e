"""A realistic seeded Stripe account with a matching users table and its ground truth.

`generate_account(n)` builds `n` test-mode customers (a few of them to be marked deleted by
the sandbox loader), a handful of live-mode customers, cards, and local users, with
anomalies of every customer-side finding kind planted at pseudo-random places. The ground
truth is computed by construction, never by running compare.

The ground truth assumes the configuration in `GROUND_TRUTH_CONFIG`:
- user id metadata key "user_id", mapped metadata keys ("plan",) (users column `plan`),
  email and name compared;
- scope {"env": "prod"}. Customers with env "staging" or without metadata belong to
  another environment sharing the account. Those no user links to are listed in
  `out_of_scope_customer_ids`: compare must ignore them entirely, so the ground truth
  holds no row for them, although several are planted so that they WOULD be reported
  without the scope (orphans, a duplicate user id and email of a prod customer, a match
  for an unlinked or a soft-deleted user). A few others are linked explicitly by a user,
  which puts them in scope: the staging ones are consistent and clean, the ones without
  metadata report `stale_metadata` for metadata.user_id and metadata.plan.

Findings rows are `{"kind", "customer_id", "user_id", "field"}` with "" where the rule
leaves a column empty; `missing_customer` rows carry the expected classification in
"cause" ("deleted", "other_mode", "absent"). Card facts (`card_expired`, `card_expiring`,
`missing_default_payment_method`, `duplicate_card`) sit in `card_ground_truth`, relative to
`now`: a card is valid through the last day of its expiry month (UTC), expiring means it
expires within 30 days. Expiry months are never drawn within two days of either boundary,
so a date-based and a timestamp-based reading of those rules agree.
"""

from __future__ import annotations

import calendar
import gc
import json
import random
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import sqlalchemy as sa

from reconcile.errors import UserDBError

__all__ = [
    "CARD_EXPIRING_WINDOW_DAYS",
    "GROUND_TRUTH_CONFIG",
    "MIN_CUSTOMERS",
    "SeededAccount",
    "generate_account",
    "listed_customers",
    "users_db_shown",
    "users_db_url",
    "users_snapshot",
    "write_ground_truth",
    "write_users_db",
]

GROUND_TRUTH_CONFIG: dict[str, Any] = {
    "user_id_metadata_key": "user_id",
    "metadata_keys": ("plan",),
    "scope": {"env": "prod"},
}
CARD_EXPIRING_WINDOW_DAYS = 30

_T = TypeVar("_T")
_DAY = 86_400
_ALNUM = string.ascii_letters + string.digits
# Random bytes to alphanumerics in one C call; the slight bias toward the first characters
# does not matter for ids.
_BYTE_TO_ALNUM = bytes((_ALNUM * 5)[:256], "ascii")
_PLANS = ("free", "pro", "team", "enterprise")
_DOMAINS = (
    "example.com",
    "mail.example.org",
    "corp.example.net",
    "example.co.uk",
    "posteo.example",
)
# (display, ascii slug): real accounts carry accents and non-Latin scripts.
_FIRST = (
    ("Anna", "anna"),
    ("José", "jose"),
    ("Zoë", "zoe"),
    ("Øyvind", "oyvind"),
    ("Chloé", "chloe"),
    ("Mohammed", "mohammed"),
    ("Li", "li"),
    ("Priya", "priya"),
    ("Łukasz", "lukasz"),
    ("Søren", "soren"),
    ("Ana", "ana"),
    ("Björn", "bjorn"),
    ("Yuki", "yuki"),
    ("Olga", "olga"),
    ("James", "james"),
    ("Fatima", "fatima"),
    ("Noah", "noah"),
    ("Émile", "emile"),
    ("Aiko", "aiko"),
    ("Carlos", "carlos"),
    ("Дмитрий", "dmitry"),
    ("美咲", "misaki"),
)
_LAST = (
    ("García", "garcia"),
    ("Müller", "muller"),
    ("Nguyễn", "nguyen"),
    ("Smith", "smith"),
    ("Kowalski", "kowalski"),
    ("O'Brien", "obrien"),
    ("Şahin", "sahin"),
    ("Dubois", "dubois"),
    ("Rossi", "rossi"),
    ("Jensen", "jensen"),
    ("Tanaka", "tanaka"),
    ("Silva", "silva"),
    ("Novák", "novak"),
    ("Ivanova", "ivanova"),
    ("Khan", "khan"),
    ("Van der Berg", "vanderberg"),
    ("Иванов", "ivanov"),
    ("王", "wang"),
    ("Lefèvre", "lefevre"),
    ("Haddad", "haddad"),
)
_BRANDS = ("visa", "visa", "visa", "mastercard", "mastercard", "amex", "discover")
_FUNDING = ("credit", "credit", "debit", "debit", "prepaid")

# Share of n_customers for each planted scenario (at least one of each whatever n is).
_RATES: dict[str, float] = {
    "duplicate_user_id": 0.004,
    "duplicate_email": 0.004,
    "duplicate_link": 0.003,
    "orphan": 0.008,
    "missing_deleted": 0.001,
    "missing_other_mode": 0.001,
    "missing_absent": 0.001,
    "unlinked_by_uid": 0.003,
    "unlinked_by_email": 0.003,
    "unlinked_ambiguous": 0.001,
    "stale": 0.015,
    "legacy_linked": 0.003,
    "deleted_linked": 0.003,
    "deleted_by_uid": 0.002,
    "deleted_missing": 0.001,
    "staging_orphan": 0.005,
    "staging_duplicate": 0.002,
    "staging_unlinked": 0.001,
    "staging_deleted": 0.001,
    "staging_linked": 0.002,
    "unscoped_no_metadata": 0.003,
}
# Customers (in the test-mode list, deleted ones included) each scenario consumes.
_COST: dict[str, int] = {
    "normal": 1,
    "duplicate_user_id": 3,  # 2 or 3; budgeted at 3, the remainder goes to normal pairs
    "duplicate_email": 2,
    "duplicate_link": 1,
    "orphan": 1,
    "missing_deleted": 1,
    "missing_other_mode": 0,
    "missing_absent": 0,
    "unlinked_by_uid": 1,
    "unlinked_by_email": 1,
    "unlinked_ambiguous": 2,
    "stale": 1,
    "legacy_linked": 1,
    "deleted_linked": 1,
    "deleted_by_uid": 1,
    "deleted_missing": 0,
    "staging_orphan": 1,
    "staging_duplicate": 2,
    "staging_unlinked": 1,
    "staging_deleted": 1,
    "staging_linked": 1,
    "unscoped_no_metadata": 1,
}
_NEVER_PAID_RATE = 0.05  # users who never became customers: no finding
MIN_CUSTOMERS = sum(_COST[name] for name in _RATES) + 1


@dataclass
class SeededAccount:
    """Plain records for the sandbox loader and the users table, and what compare must find."""

    customers: list[dict[str, Any]]
    payment_methods: list[dict[str, Any]]
    users: list[dict[str, Any]]
    ground_truth: list[dict[str, Any]]
    now: int
    seed: int = 0
    card_ground_truth: list[dict[str, Any]] = field(default_factory=list)
    deleted_customer_ids: list[str] = field(default_factory=list)
    live_customers: list[dict[str, Any]] = field(default_factory=list)
    out_of_scope_customer_ids: list[str] = field(default_factory=list)


def _month_start(year: int, month: int) -> int:
    """Unix time of 00:00 UTC on the first day of (year, month); month may overflow."""
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    return calendar.timegm((year, month, 1, 0, 0, 0))


class _Builder:
    """Accumulates one account; every random draw goes through `self.rng`."""

    def __init__(self, rng: random.Random, now: int) -> None:
        self.rng = rng
        self.now = now
        self.customers: list[dict[str, Any]] = []
        self.live_customers: list[dict[str, Any]] = []
        self.users: list[dict[str, Any]] = []
        self.truth: list[dict[str, Any]] = []
        self.deleted_ids: list[str] = []
        self.out_of_scope_ids: list[str] = []
        self.payment_methods: list[dict[str, Any]] = []
        self.card_truth: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self._next_user_id = 1
        self._serial = 0
        self._unknown_uid = 10**9  # metadata user ids that no local user has
        self._expires_at: dict[tuple[int, int], int] = {}
        self._expiry_pools = self._expiry_offsets()

    # --- primitives ---------------------------------------------------------------------
    def _alnum(self, length: int) -> str:
        raw = self.rng.getrandbits(8 * length).to_bytes(length, "little")
        return raw.translate(_BYTE_TO_ALNUM).decode("ascii")

    def _pick(self, choices: Sequence[_T]) -> _T:
        # random.choice's rejection sampling costs more than the rest of a record.
        return choices[int(self.rng.random() * len(choices))]

    def _between(self, low: int, high: int) -> int:
        """An integer in [low, high), like randrange but cheaper."""
        return low + int(self.rng.random() * (high - low))

    def _token(self, prefix: str, length: int) -> str:
        while True:
            token = prefix + self._alnum(length)
            if token not in self._ids:
                self._ids.add(token)
                return token

    def customer_id(self) -> str:
        return self._token("cus_", 14)

    def person(self) -> tuple[str, str]:
        """A display name and a unique email address for it."""
        first, first_slug = self._pick(_FIRST)
        last, last_slug = self._pick(_LAST)
        self._serial += 1
        email = f"{first_slug}.{last_slug}{self._serial}@{self._pick(_DOMAINS)}"
        return f"{first} {last}", email

    def created(self) -> int:
        return self.now - self._between(_DAY, 5 * 365 * _DAY)

    def plan(self) -> str | None:
        return None if self.rng.random() < 0.15 else self._pick(_PLANS)

    def unknown_uid(self) -> str:
        self._unknown_uid += 1
        return str(self._unknown_uid)

    def customer(
        self,
        email: str | None,
        name: str | None,
        metadata: dict[str, str],
        *,
        live: bool = False,
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.customer_id(),
            "created": self.created(),
            "email": email,
            "name": name,
            "phone": f"+1555{self._between(0, 10**7):07d}" if self.rng.random() < 0.3 else None,
            "description": "Imported from the billing v1 system"
            if self.rng.random() < 0.05
            else None,
            "metadata": metadata,
            "default_payment_method": None,
        }
        (self.live_customers if live else self.customers).append(record)
        return record

    def user(
        self,
        email: str | None,
        name: str | None,
        plan: str | None,
        customer_id: str | None,
        *,
        deleted: bool = False,
    ) -> dict[str, Any]:
        deleted_at = None
        if deleted:
            moment = self.now - self.rng.randrange(_DAY, 400 * _DAY)
            deleted_at = datetime.fromtimestamp(moment, UTC).isoformat()
        record = {
            "id": self._next_user_id,
            "email": email,
            "name": name,
            "plan": plan,
            "stripe_customer_id": customer_id,
            "deleted_at": deleted_at,
        }
        self._next_user_id += 1
        self.users.append(record)
        return record

    def local_email(self, email: str) -> str:
        # People type their address sloppily at sign-up; Stripe got it from checkout.
        return f" {email} " if self.rng.random() < 0.05 else email

    def stripe_email(self, email: str) -> str:
        roll = self.rng.random()
        if roll < 0.05:
            return email.upper()
        if roll < 0.1:
            return email[0].upper() + email[1:]
        return email

    def local_name(self, name: str) -> str:
        return name + " " if self.rng.random() < 0.05 else name

    def find(self, kind: str, customer_id: str, user_id: str | int = "", field: str = "") -> None:
        self.truth.append(
            {"kind": kind, "customer_id": customer_id, "user_id": str(user_id), "field": field}
        )

    def out_of_scope(self, record: dict[str, Any]) -> None:
        self.out_of_scope_ids.append(record["id"])

    # --- scenarios ----------------------------------------------------------------------
    def linked_pair(self, *, env: str = "prod") -> tuple[dict[str, Any], dict[str, Any]]:
        """A consistent user and customer: no finding."""
        name, email = self.person()
        plan = self.plan()
        user = self.user(self.local_email(email), self.local_name(name), plan, None)
        metadata = {"user_id": str(user["id"]), "env": env}
        if plan is not None:
            metadata["plan"] = plan
        cus = self.customer(self.stripe_email(email), name, metadata)
        user["stripe_customer_id"] = cus["id"]
        return user, cus

    def normal(self) -> None:
        self.linked_pair()

    def never_paid(self) -> None:
        name, email = self.person()
        self.user(email, name, self.plan() or "free", None)

    def duplicate_user_id(self) -> None:
        user, first = self.linked_pair()
        group = [first]
        for _ in range(self.rng.choice((1, 1, 2))):
            name, email = self.person()
            group.append(self.customer(email, name, {"user_id": str(user["id"]), "env": "prod"}))
        oldest = min(group, key=lambda c: (c["created"], c["id"]))
        self.find("duplicate_user_id", oldest["id"], user["id"])
        if len(group) == 2:
            self.normal()  # the budget assumed three customers

    def duplicate_email(self) -> None:
        _, first = self.linked_pair()
        email = first["email"]
        variant = email.lower() if email != email.lower() else email.upper()
        second = self.customer(variant, first["name"], {"env": "prod", "plan": "free"})
        oldest = min((first, second), key=lambda c: (c["created"], c["id"]))
        self.find("duplicate_email", oldest["id"])

    def duplicate_link(self) -> None:
        user, cus = self.linked_pair()
        name, email = self.person()
        other = self.user(email, name, self.plan(), cus["id"])
        self.find("duplicate_link", cus["id"], min(str(user["id"]), str(other["id"])))

    def orphan(self) -> None:
        name, email = self.person()
        metadata = {"env": "prod"}
        if self.rng.random() < 0.5:
            metadata["user_id"] = self.unknown_uid()
        cus = self.customer(email if self.rng.random() < 0.9 else None, name, metadata)
        self.find("orphan_customer", cus["id"])

    def _missing(self, customer_id: str, cause: str) -> None:
        name, email = self.person()
        user = self.user(email, name, self.plan(), customer_id)
        self.truth.append(
            {
                "kind": "missing_customer",
                "customer_id": customer_id,
                "user_id": str(user["id"]),
                "field": "",
                "cause": cause,
            }
        )

    def missing_deleted(self) -> None:
        name, email = self.person()
        cus = self.customer(email, name, {"env": "prod", "user_id": str(self._next_user_id)})
        self.deleted_ids.append(cus["id"])
        self._missing(cus["id"], "deleted")

    def missing_other_mode(self) -> None:
        name, email = self.person()
        cus = self.customer(email, name, {"env": "prod"}, live=True)
        self._missing(cus["id"], "other_mode")

    def missing_absent(self) -> None:
        self._missing(self.customer_id(), "absent")

    def unlinked_by_uid(self) -> None:
        name, email = self.person()
        user = self.user(email, name, self.plan(), None)
        _, other_email = self.person()  # checkout with another address
        cus = self.customer(other_email, name, {"env": "prod", "user_id": str(user["id"])})
        self.find("unlinked_user", cus["id"], user["id"])

    def unlinked_by_email(self) -> None:
        name, email = self.person()
        user = self.user(self.local_email(email), name, self.plan(), None)
        cus = self.customer(self.stripe_email(email), name, {"env": "prod"})
        self.find("unlinked_user", cus["id"], user["id"])

    def unlinked_ambiguous(self) -> None:
        name, email = self.person()
        user = self.user(email, name, self.plan(), None)
        _, other_email = self.person()
        self.customer(other_email, name, {"env": "prod", "user_id": str(user["id"])})
        self.customer(email.upper(), name, {"env": "prod"})
        self.find("unlinked_user", "", user["id"])

    def stale(self) -> None:
        user, cus = self.linked_pair()
        meta = cus["metadata"]

        def plan_changed() -> str:
            current = meta.get("plan")
            meta["plan"] = self.rng.choice([p for p in _PLANS if p != current])
            return "metadata.plan"

        def plan_dropped() -> str:
            if user["plan"] is None:
                user["plan"] = "pro"
            meta.pop("plan", None)
            return "metadata.plan"

        def uid_wrong() -> str:
            meta["user_id"] = f"legacy-{self.unknown_uid()}"
            return "metadata.user_id"

        def uid_dropped() -> str:
            del meta["user_id"]
            return "metadata.user_id"

        def email_changed() -> str:
            cus["email"] = self.person()[1]
            return "email"

        def email_dropped() -> str:
            cus["email"] = None
            return "email"

        def name_changed() -> str:
            name, _ = self.person()
            cus["name"] = name if name != cus["name"] else name + " Jr."
            return "name"

        groups: list[tuple[Callable[[], str], ...]] = [
            (plan_changed, plan_dropped),
            (uid_wrong, uid_dropped),
            (email_changed, email_dropped),
            (name_changed,),
        ]
        chosen = self.rng.sample(groups, self.rng.choice((1, 1, 1, 2, 3)))
        changes = [self.rng.choice(group) for group in chosen]
        for change in changes:
            self.find("stale_metadata", cus["id"], user["id"], change())

    def legacy_linked(self) -> None:
        user, cus = self.linked_pair()
        cus["metadata"] = {}  # created before metadata was written: in scope only by the link
        if user["plan"] is None:
            user["plan"] = "free"
        self.find("stale_metadata", cus["id"], user["id"], "metadata.user_id")
        self.find("stale_metadata", cus["id"], user["id"], "metadata.plan")

    def deleted_linked(self) -> None:
        user, cus = self.linked_pair()
        user["deleted_at"] = datetime.fromtimestamp(self.now - 30 * _DAY, UTC).isoformat()
        self.find("deleted_user_customer", cus["id"], user["id"])

    def deleted_by_uid(self) -> None:
        name, email = self.person()
        user = self.user(email, name, self.plan(), None, deleted=True)
        _, other_email = self.person()
        cus = self.customer(other_email, name, {"env": "prod", "user_id": str(user["id"])})
        self.find("deleted_user_customer", cus["id"], user["id"])

    def deleted_missing(self) -> None:
        name, email = self.person()
        self.user(email, name, self.plan(), self.customer_id(), deleted=True)

    def staging_orphan(self) -> None:
        name, email = self.person()
        metadata = {"env": "staging", "user_id": self.unknown_uid()}
        self.out_of_scope(self.customer(email, name, metadata))

    def staging_duplicate(self) -> None:
        user, cus = self.linked_pair()
        metadata = {"env": "staging", "user_id": str(user["id"])}
        self.out_of_scope(self.customer(cus["email"], cus["name"], metadata))

    def staging_unlinked(self) -> None:
        name, email = self.person()
        user = self.user(email, name, self.plan(), None)
        metadata = {"env": "staging", "user_id": str(user["id"])}
        self.out_of_scope(self.customer(email, name, metadata))

    def staging_deleted(self) -> None:
        name, email = self.person()
        user = self.user(email, name, self.plan(), None, deleted=True)
        metadata = {"env": "staging", "user_id": str(user["id"])}
        self.out_of_scope(self.customer(email, name, metadata))

    def staging_linked(self) -> None:
        self.linked_pair(env="staging")  # in scope through the link, and consistent

    def unscoped_no_metadata(self) -> None:
        name, email = self.person()
        self.out_of_scope(self.customer(email, name, {}))

    # --- cards --------------------------------------------------------------------------
    def _expiry_offsets(self) -> dict[str, list[tuple[int, int]]]:
        """(exp_year, exp_month) choices per category, each clear of the boundaries by 2 days."""
        today = datetime.fromtimestamp(self.now, UTC)
        window = CARD_EXPIRING_WINDOW_DAYS * _DAY
        margin = 2 * _DAY
        pools: dict[str, list[tuple[int, int]]] = {"expired": [], "expiring": [], "later": []}
        for offset in range(-36, 97):
            month_index = today.month + offset
            expires_at = _month_start(today.year, month_index + 1)
            delta = expires_at - self.now
            year = today.year + (month_index - 1) // 12
            month = (month_index - 1) % 12 + 1
            if delta <= -margin:
                pools["expired"].append((year, month))
            elif margin <= delta <= window - margin:
                pools["expiring"].append((year, month))
            elif delta >= window + margin:
                pools["later"].append((year, month))
        return pools

    def _expiry(self) -> tuple[int, int]:
        roll = self.rng.random()
        pools = self._expiry_pools
        if roll < 0.07:
            return self._pick(pools["expired"])
        if roll < 0.11 and pools["expiring"]:
            return self._pick(pools["expiring"])
        return self._pick(pools["later"])

    def _card_facts(self, pm: dict[str, Any]) -> None:
        card = pm["card"]
        key = (card["exp_year"], card["exp_month"])
        expires_at = self._expires_at.get(key)
        if expires_at is None:
            expires_at = self._expires_at[key] = _month_start(key[0], key[1] + 1)
        row = {"customer_id": pm["customer"], "user_id": "", "field": ""}
        row["payment_method_id"] = pm["id"]
        if expires_at <= self.now:
            self.card_truth.append({"kind": "card_expired", **row})
        elif expires_at - self.now <= CARD_EXPIRING_WINDOW_DAYS * _DAY:
            self.card_truth.append({"kind": "card_expiring", **row})

    def payment_method(self, cus: dict[str, Any], card: dict[str, Any] | None) -> dict[str, Any]:
        if card is None:
            brand = self._pick(_BRANDS)
            year, month = self._expiry()
            card = {
                "brand": brand,
                "last4": f"{self._between(0, 10_000):04d}",
                "exp_month": month,
                "exp_year": year,
                "fingerprint": self._alnum(16),
                "funding": self._pick(_FUNDING),
            }
        pm = {
            "id": self._token("pm_", 24),
            "created": self._between(cus["created"], self.now),
            "customer": cus["id"],
            "card": dict(card),
        }
        self.payment_methods.append(pm)
        self._card_facts(pm)
        return pm

    def cards(self) -> None:
        deleted = set(self.deleted_ids)
        shared: list[dict[str, Any]] = []
        for cus in self.customers:
            if cus["id"] in deleted:
                continue
            roll = self.rng.random()
            count = 0 if roll < 0.15 else 1 if roll < 0.85 else 2 if roll < 0.97 else 3
            if count == 0:
                continue
            # A family card: the same number at a second customer is not a duplicate.
            reuse = shared[-1] if shared and self.rng.random() < 0.005 else None
            methods = [self.payment_method(cus, reuse)]
            methods += [self.payment_method(cus, None) for _ in range(count - 1)]
            if self.rng.random() < 0.01:
                methods.append(self.payment_method(cus, methods[0]["card"]))
                self.card_truth.append(
                    {
                        "kind": "duplicate_card",
                        "customer_id": cus["id"],
                        "user_id": "",
                        "field": "",
                        "fingerprint": methods[0]["card"]["fingerprint"],
                        "payment_method_ids": [methods[0]["id"], methods[-1]["id"]],
                    }
                )
            if self.rng.random() < 0.05:
                self.card_truth.append(
                    {
                        "kind": "missing_default_payment_method",
                        "customer_id": cus["id"],
                        "user_id": "",
                        "field": "",
                    }
                )
            else:
                cus["default_payment_method"] = self.rng.choice(methods)["id"]
            if len(shared) < 1000:
                shared.append(methods[0]["card"])


def _scenario_plan(n_customers: int) -> list[str]:
    counts = {name: max(1, round(n_customers * rate)) for name, rate in _RATES.items()}
    budget = sum(_COST[name] * count for name, count in counts.items())
    if budget >= n_customers:
        raise ValueError(
            f"n_customers={n_customers} is too small for every planted anomaly; "
            f"use at least {MIN_CUSTOMERS}"
        )
    plan = [name for name, count in counts.items() for _ in range(count)]
    plan += ["normal"] * (n_customers - budget)
    plan += ["never_paid"] * round(n_customers * _NEVER_PAID_RATE)
    return plan


def generate_account(n_customers: int, *, seed: int = 0, now: int | None = None) -> SeededAccount:
    """Build the account: deterministic for (n_customers, seed, now); reads the clock only
    when `now` is None."""
    now = int(time.time()) if now is None else now
    rng = random.Random(seed)
    builder = _Builder(rng, now)
    plan = _scenario_plan(n_customers)
    rng.shuffle(plan)
    # Millions of small dicts that all live to the end: cyclic GC passes over them would
    # cost more than building them, and they hold no cycles.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for scenario in plan:
            getattr(builder, scenario)()
        builder.cards()
    finally:
        if gc_was_enabled:
            gc.enable()
    return SeededAccount(
        customers=builder.customers,
        payment_methods=builder.payment_methods,
        users=builder.users,
        ground_truth=builder.truth,
        now=now,
        seed=seed,
        card_ground_truth=builder.card_truth,
        deleted_customer_ids=builder.deleted_ids,
        live_customers=builder.live_customers,
        out_of_scope_customer_ids=builder.out_of_scope_ids,
    )


def listed_customers(account: SeededAccount) -> list[dict[str, Any]]:
    """The test-mode customers a listing returns: the account's, less the deleted ones."""
    deleted = set(account.deleted_customer_ids)
    return [c for c in account.customers if c["id"] not in deleted]


def users_snapshot(account: SeededAccount) -> pd.DataFrame:
    """The users snapshot the user-DB reader would build from `write_users_db`'s table."""
    from reconcile.rules.snapshots import normalize_users

    raw = pd.DataFrame(account.users)
    return normalize_users(
        pd.DataFrame(
            {
                "user_id": raw["id"],
                "email": raw["email"],
                "name": raw["name"],
                "customer_id": raw["stripe_customer_id"],
                "deleted": raw["deleted_at"].notna(),
                "meta.plan": raw["plan"],
            }
        ),
        list(GROUND_TRUTH_CONFIG["metadata_keys"]),
    )


_METADATA = sa.MetaData()
_USERS = sa.Table(
    "users",
    _METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("email", sa.String(320)),
    sa.Column("name", sa.String(200)),
    sa.Column("plan", sa.String(40)),
    sa.Column("stripe_customer_id", sa.String(64)),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
)
# Written beside `users`: its presence says the sandbox made that table, so a later run may
# replace its rows. A `users` table without it may be someone's real data and is left alone.
_SEED_MARK = sa.Table(
    "stripe_sandbox_seed",
    _METADATA,
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("customers", sa.Integer, nullable=False),
    sa.Column("now", sa.BigInteger, nullable=False),
)


def users_db_url(url_or_path: str) -> str:
    """A SQLAlchemy URL for `write_users_db`'s argument (a URL, or a SQLite file path)."""
    return url_or_path if "://" in url_or_path else f"sqlite:///{url_or_path}"


def users_db_shown(url_or_path: str) -> str:
    """The users database as messages name it: a SQLite file, or the URL without password."""
    url = sa.make_url(users_db_url(url_or_path))
    if url.get_backend_name() == "sqlite" and url.database:
        return url.database
    return url.render_as_string(hide_password=True)


def write_users_db(account: SeededAccount, url_or_path: str, *, chunk_size: int = 50_000) -> bool:
    """Create the `users` table at a SQLAlchemy URL (or a SQLite file path) and fill it.

    A `users` table an earlier call wrote is emptied and refilled, in one transaction:
    returns True when it did so, False when it created the table. A `users` table it did not
    write is never touched: UserDBError. Errors name the database without its password and
    carry no row (the rows are generated personal data).
    """
    url = users_db_url(url_or_path)
    shown = users_db_shown(url_or_path)
    rows = [
        {
            **user,
            "deleted_at": (
                datetime.fromisoformat(user["deleted_at"]) if user["deleted_at"] else None
            ),
        }
        for user in account.users
    ]
    engine = sa.create_engine(url, hide_parameters=True)
    try:
        with engine.begin() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            reseed = _USERS.name in tables
            if reseed and _SEED_MARK.name not in tables:
                raise UserDBError(
                    f"{shown} already has a users table the sandbox did not write (or wrote "
                    "before it marked its tables); it is left alone: remove it or give "
                    "--users-db another database"
                )
            _METADATA.create_all(conn)  # only the tables missing
            conn.execute(_SEED_MARK.delete())
            if reseed:
                conn.execute(_USERS.delete())
            conn.execute(
                _SEED_MARK.insert(),
                {"seed": account.seed, "customers": len(account.customers), "now": account.now},
            )
            for start in range(0, len(rows), chunk_size):
                conn.execute(_USERS.insert(), rows[start : start + chunk_size])
    except sa.exc.SQLAlchemyError as exc:
        # The statement and its parameters stay out: they hold the generated names.
        cause = str(exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc).splitlines()
        raise UserDBError(
            f"could not write the users table to {shown}: {type(exc).__name__}"
            + (f" ({cause[0]})" if cause else "")
        ) from None
    finally:
        engine.dispose()
    return reseed


def write_ground_truth(account: SeededAccount, path: Path) -> None:
    """Write the ground truth, the configuration it assumes and the ids it mentions as JSON."""
    document = {
        "seed": account.seed,
        "now": account.now,
        "assumes": {
            "user_id_metadata_key": GROUND_TRUTH_CONFIG["user_id_metadata_key"],
            "metadata_keys": list(GROUND_TRUTH_CONFIG["metadata_keys"]),
            "scope": dict(GROUND_TRUTH_CONFIG["scope"]),
            "card_expiring_window_days": CARD_EXPIRING_WINDOW_DAYS,
        },
        "findings": account.ground_truth,
        "cards": account.card_ground_truth,
        "deleted_customer_ids": account.deleted_customer_ids,
        "live_customer_ids": [c["id"] for c in account.live_customers],
        "out_of_scope_customer_ids": account.out_of_scope_customer_ids,
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
