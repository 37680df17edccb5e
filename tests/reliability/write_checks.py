"""What a write job promises, checked from the outside: Stripe's request log, the audit log,
and the state Stripe and the user DB hold afterwards.

Shared by the convergence property test (sandbox in-process) and bench/kill_campaign.py
(sandbox in its own process): the sandbox's request records and the audit rows come in as
plain mappings, and the current state through two look-ups, so the rules stay pure.

- A *write* is a POST or DELETE under `/v1/` that Stripe carried out (answered 2xx, or
  marked `applied` by the sandbox). A POST answered from Stripe's idempotency cache for its
  key is a replay of the first result, not a write.
- *Unaudited*: a write without an audit row carrying its idempotency key (a DELETE sent
  without a key: without a delete row for its customer).
- *Double*: one intended change carried out twice: the same field of the same customer set
  to the same value by two writes, a second customer created for one user, a customer
  deleted twice.
- *Lost*: an audit row says `applied` but Stripe (or the user DB) does not hold what its
  `after` says was written.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

__all__ = [
    "AUDIT_TABLE",
    "AuditRow",
    "CustomerView",
    "Double",
    "SentWrite",
    "customer_view",
    "double_writes",
    "lost_writes",
    "read_audit",
    "successful_writes",
    "unaudited_writes",
]

AUDIT_TABLE = "stripe_reconcile_audit"
APPLIED = "applied"
_CUSTOMERS = "/v1/customers"


@dataclass(frozen=True)
class SentWrite:
    method: str
    path: str
    status: int
    idempotency_key: str | None
    params: Mapping[str, Any]

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SentWrite:
        """From the sandbox's request log (`RequestRecord.to_json()` or `/_sandbox/requests`)."""
        return cls(
            method=str(record["method"]),
            path=str(record["path"]),
            status=int(record["status"]),
            idempotency_key=record.get("idempotency_key") or None,
            params=dict(record.get("params") or {}),
        )

    @property
    def customer_id(self) -> str | None:
        """The customer a `/v1/customers/{id}` write addresses (None for a create)."""
        head, _, rest = self.path.partition(_CUSTOMERS + "/")
        if head or not rest:
            return None
        return rest.split("/", 1)[0]

    @property
    def is_customer_create(self) -> bool:
        return self.method == "POST" and self.path.rstrip("/") == _CUSTOMERS


@dataclass(frozen=True)
class AuditRow:
    run_id: str
    job: str
    action: str
    customer_id: str
    user_id: str
    before: Mapping[str, Any]
    after: Mapping[str, Any]
    idempotency_key: str
    outcome: str

    def describe(self) -> str:
        return (
            f"{self.job} {self.action} customer={self.customer_id or '-'} "
            f"user={self.user_id or '-'} key={self.idempotency_key} after={dict(self.after)}"
        )


@dataclass(frozen=True)
class CustomerView:
    """What a check needs of a customer as Stripe holds it now."""

    deleted: bool = False
    email: str | None = None
    name: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    default_payment_method: str | None = None


# A customer id -> the customer now (None: Stripe never had it).
CustomerLookup = Callable[[str], CustomerView | None]
# A user id -> the customer id its row holds now (None: empty or no such user).
LinkLookup = Callable[[str], str | None]


def customer_view(obj: Mapping[str, Any]) -> CustomerView:
    """From a customer as the API returns it (`{"id":..., "deleted": true}` once deleted)."""
    if obj.get("deleted"):
        return CustomerView(deleted=True)
    default = (obj.get("invoice_settings") or {}).get("default_payment_method")
    if isinstance(default, Mapping):
        default = default.get("id")
    return CustomerView(
        email=obj.get("email"),
        name=obj.get("name"),
        metadata=dict(obj.get("metadata") or {}),
        default_payment_method=str(default) if default else None,
    )


def _json_object(text: Any) -> Mapping[str, Any]:
    if not text:
        return {}
    loaded = json.loads(str(text))
    return loaded if isinstance(loaded, dict) else {}


def read_audit(state_url: str) -> list[AuditRow]:
    """Every audit row of the state database, oldest first (none when it has no table)."""
    engine = sa.create_engine(state_url)
    try:
        if not sa.inspect(engine).has_table(AUDIT_TABLE):
            return []
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"select * from {AUDIT_TABLE} order by id")).mappings()
            return [
                AuditRow(
                    run_id=str(row["run_id"] or ""),
                    job=str(row["job"] or ""),
                    action=str(row["action"] or ""),
                    customer_id=str(row["customer_id"] or ""),
                    user_id=str(row["user_id"] or ""),
                    before=_json_object(row["before"]),
                    after=_json_object(row["after"]),
                    idempotency_key=str(row["idempotency_key"] or ""),
                    outcome=str(row["outcome"] or ""),
                )
                for row in rows
            ]
    finally:
        engine.dispose()


def successful_writes(records: Iterable[Mapping[str, Any]]) -> list[SentWrite]:
    """The POSTs and DELETEs Stripe carried out, replays of a key left out.

    Where the sandbox's records say so (`applied`, `replayed`), they decide: a write applied
    and then answered with an error or a dropped connection is still a write. Older records
    without those fields: a 2xx answer is a write, unless a 2xx answered its key before.
    """
    answered: set[str] = set()
    writes: list[SentWrite] = []
    for record in records:
        write = SentWrite.from_record(record)
        if write.method not in ("POST", "DELETE") or not write.path.startswith("/v1/"):
            continue
        key = write.idempotency_key
        if "applied" in record:
            if not record["applied"] or record.get("replayed"):
                continue
        elif not 200 <= write.status < 300:
            continue
        elif write.method == "POST" and key is not None:
            if key in answered:
                continue  # Stripe answered from its idempotency cache: nothing happened
            answered.add(key)
        writes.append(write)
    return writes


def unaudited_writes(
    writes: Iterable[SentWrite], audit: Sequence[AuditRow], *, applied_only: bool = False
) -> list[SentWrite]:
    """Writes no audit row accounts for. `applied_only`: only `applied` rows count (a run
    that was not killed must have finished every row it began)."""
    rows = [row for row in audit if row.outcome == APPLIED or not applied_only]
    keys = {row.idempotency_key for row in rows if row.idempotency_key}
    deletes = {row.customer_id for row in rows if "delete" in row.action}
    missing = []
    for write in writes:
        if write.idempotency_key is not None:
            audited = write.idempotency_key in keys
        else:
            audited = write.method == "DELETE" and write.customer_id in deletes
        if not audited:
            missing.append(write)
    return missing


def _leaves(params: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for name, value in params.items():
        path = f"{prefix}{name}"
        if isinstance(value, Mapping):
            yield from _leaves(value, path + ".")
        else:
            yield path, json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class Double:
    """One intended change carried out `times` times (more than once)."""

    what: str
    times: int


def double_writes(writes: Iterable[SentWrite], user_id_key: str = "user_id") -> list[Double]:
    """Intended changes carried out more than once (for a world that nobody else changes
    meanwhile: there, no change is legitimately made twice)."""
    changes: Counter[tuple[str, str, str]] = Counter()
    creates: Counter[str] = Counter()
    deletes: Counter[str] = Counter()
    for write in writes:
        customer = write.customer_id
        if write.is_customer_create:
            user = str((write.params.get("metadata") or {}).get(user_id_key, ""))
            creates[user or f"(no {user_id_key})"] += 1
        elif write.method == "DELETE" and customer is not None:
            deletes[customer] += 1
        elif write.method == "POST" and customer is not None:
            for path, value in _leaves(write.params):
                if path != "expand" and not path.startswith("expand."):
                    changes[(customer, path, value)] += 1
    found = [Double(f"customer created for user {u}", n) for u, n in creates.items() if n > 1]
    found += [Double(f"DELETE of {c}", n) for c, n in deletes.items() if n > 1]
    found += [
        Double(f"{path}={value} written to {customer}", n)
        for (customer, path, value), n in changes.items()
        if n > 1
    ]
    return sorted(found, key=lambda d: d.what)


def _absent(value: Any) -> bool:
    return value is None or value == ""


def _holds(row: AuditRow, customer: CustomerView | None, link_of: LinkLookup) -> str | None:
    """Why Stripe or the user DB does not hold what the applied row says; None if it does."""
    after = row.after
    customer_id = str(after.get("customer_id") or row.customer_id or "")
    gone = customer is None or customer.deleted
    problems = []
    if after.get("customer_deleted") is True or after.get("deleted") is True:
        if not gone:
            problems.append(f"customer {customer_id} still exists")
    elif gone and (
        row.action.startswith(("create", "link"))
        or any(name in after for name in ("metadata", "email", "name", "default_payment_method"))
    ):
        problems.append(f"customer {customer_id} does not exist (deleted or never created)")
    elif customer is not None and not customer.deleted:
        for key, value in dict(after.get("metadata") or {}).items():
            held = customer.metadata.get(key)
            if (_absent(value) and not _absent(held)) or (not _absent(value) and held != value):
                problems.append(f"metadata.{key} is {held!r}, the audit says {value!r}")
        for name in ("email", "name"):
            if name in after and getattr(customer, name) != after[name]:
                problems.append(f"{name} differs from the audit's")
        if "default_payment_method" in after and (
            customer.default_payment_method != after["default_payment_method"]
        ):
            problems.append(
                f"default payment method is {customer.default_payment_method!r}, the audit "
                f"says {after['default_payment_method']!r}"
            )
    if after.get("linked") is True and row.user_id and link_of(row.user_id) != customer_id:
        problems.append(f"user {row.user_id} links {link_of(row.user_id)!r}, not {customer_id}")
    cleared = after.get("link_cleared") is True and row.user_id
    if cleared and link_of(row.user_id) == (row.customer_id or customer_id):
        problems.append(f"user {row.user_id} still links {row.customer_id}")
    return "; ".join(problems) or None


def lost_writes(
    audit: Iterable[AuditRow], customer: CustomerLookup, link_of: LinkLookup
) -> list[str]:
    """One line per `applied` row whose result Stripe or the user DB does not hold now."""
    lost = []
    for row in audit:
        if row.outcome != APPLIED:
            continue
        customer_id = str(row.after.get("customer_id") or row.customer_id or "")
        why = _holds(row, customer(customer_id) if customer_id else None, link_of)
        if why is not None:
            lost.append(f"{row.describe()}: {why}")
    return lost
