"""A bounded log of every API request the sandbox answered."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RequestLog", "RequestRecord"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    time: float  # epoch seconds when the request arrived
    mode: str | None  # None when the key was missing or unknown
    method: str
    path: str
    # Decoded and nested as the handlers see them: `created[lt]=5` is {"created": {"lt": "5"}},
    # `expand[]=a` is {"expand": {"0": "a"}}; values stay strings; card numbers are redacted.
    params: dict[str, Any]
    status: int  # 0 when the connection was dropped on purpose
    idempotency_key: str | None
    request_id: str
    # The endpoint ran and succeeded: for a POST or DELETE, the write took effect (even when
    # an after-apply fault then failed or dropped the answer).
    applied: bool = False
    # The answer was a stored result replayed for the idempotency key: nothing executed.
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RequestLog:
    """Oldest entries fall off past `max_entries`, so long benchmarks stay bounded."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._entries: deque[RequestRecord] = deque(maxlen=max_entries)
        self._lock = threading.Lock()

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._entries.append(record)

    def entries(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
