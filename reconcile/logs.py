"""Structured logs: JSON lines for machines, readable lines on a terminal, never a secret.

The redaction processor runs on every event, whatever the caller passed: keys are
masked, e-mail addresses and the values of personal fields are replaced.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from reconcile.mode import mask_key

__all__ = ["configure_logging", "get_logger", "redact", "redact_text"]

_KEY = re.compile(r"\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9]+")
_EMAIL = re.compile(r"[^\s@<>\"',;:()\[\]]+@[^\s@<>\"',;:()\[\]]+\.[A-Za-z]{2,}")
_PERSONAL_FIELDS = frozenset({"email", "name", "phone", "emails", "names", "phones"})
# E.164 (+15551234567, +44 20 7946 0958) and North American forms ((555) 123-4567,
# 555-123-4567); ISO dates and run ids do not match.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d[\d ().-]{6,}\d|\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4})(?!\w)")
REDACTED = "[redacted]"


def redact_text(text: str) -> str:
    text = _KEY.sub(lambda m: mask_key(m.group(0)), text)
    text = _EMAIL.sub("[email]", text)
    return _PHONE.sub("[phone]", text)


def _is_personal(field: Any) -> bool:
    # customer_email, user_phone, ...: the suffix says what the value is.
    name = str(field).lower()
    return name in _PERSONAL_FIELDS or name.endswith(("_email", "_phone", "_emails", "_phones"))


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: REDACTED if _is_personal(k) else _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if isinstance(value, BaseException):
        return redact_text(str(value))
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no key, e-mail address or personal field survives."""
    for field, value in list(event_dict.items()):
        if _is_personal(field) and value is not None:
            event_dict[field] = REDACTED
        else:
            event_dict[field] = _redact_value(value)
    return event_dict


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if out.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
