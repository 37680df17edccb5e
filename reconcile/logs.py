"""Structured logs: JSON lines for machines, readable lines on a terminal, never a secret.

The redaction processor runs on every event, whatever the caller passed: keys are
masked, e-mail addresses and the values of personal fields are replaced.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO, cast

from reconcile.optional_imports import import_without

# structlog imports rich (and pygments) when installed, for console tracebacks and the
# locals of dict tracebacks. Neither is used here: format_exc_info renders every exception
# as plain text before the renderer sees it (tests/startup).
import_without("structlog", absent=("rich",))

import structlog  # noqa: E402

from reconcile.errors import ConfigError  # noqa: E402
from reconcile.mode import mask_key  # noqa: E402

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "LOG_FORMATS",
    "bind_log_context",
    "configure_logging",
    "get_logger",
    "logging_through",
    "redact",
    "redact_text",
    "unbind_log_context",
]

_KEY = re.compile(r"\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9]+")
_EMAIL = re.compile(r"[^\s@<>\"',;:()\[\]]+@[^\s@<>\"',;:()\[\]]+\.[A-Za-z]{2,}")
_PERSONAL_FIELDS = frozenset({"email", "name", "phone", "emails", "names", "phones"})
# E.164 (+15551234567, +44 20 7946 0958) and North American forms ((555) 123-4567,
# 555-123-4567); ISO dates and run ids do not match.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d[\d ().-]{6,}\d|\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4})(?!\w)")
REDACTED = "[redacted]"


# The address the tool's own messages show as an example (example.com is reserved by
# RFC 2606): no one's personal data, and useless once redacted.
EXAMPLE_ADDRESS = "you@example.com"


def _redact_address(match: re.Match[str]) -> str:
    return match.group(0) if match.group(0) == EXAMPLE_ADDRESS else "[email]"


def redact_text(text: str) -> str:
    text = _KEY.sub(lambda m: mask_key(m.group(0)), text)
    text = _EMAIL.sub(_redact_address, text)
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


LOG_FORMATS = ("json", "console")


class _Sink:
    """Where log lines go: the configured stream, or above a live progress bar.

    While a rich progress bar is drawn on the terminal, a line written straight to the
    stream would land inside the bar; printed through the bar's console it goes above.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        # print() writes a line and its newline apart; the bar redraws between two
        # console prints, so a line goes to the console only once it is whole.
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        console = _live_console
        with self._lock:
            if console is None or console.file is not self.stream:
                self.stream.write(self._pending + text)
                self._pending = ""
                return len(text)
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
        for line in lines:
            console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


_live_console: Console | None = None
_HANDLER_NAME = "stripe-reconcile"


@contextmanager
def logging_through(console: Console) -> Iterator[None]:
    """Log lines printed by `console` (a live progress bar's) while the block runs."""
    global _live_console
    previous, _live_console = _live_console, console
    try:
        yield
    finally:
        _live_console = previous


def _add_logger_name(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    record = event_dict.get("_record")
    if record is not None:
        event_dict.setdefault("logger", record.name)
    return event_dict


def _drop_color_message(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(
    level: str = "info", stream: TextIO | None = None, log_format: str | None = None
) -> None:
    """structlog's events and every library's stdlib `logging` records, one format.

    `log_format` is "json" or "console"; None picks console on a terminal, JSON
    otherwise (cron, Kubernetes). The stdlib records (APScheduler, urllib3, ...) go
    through a handler on the root logger whose formatter runs the same processors,
    redaction included, so no library's line escapes them.
    """
    out = stream or sys.stderr
    if log_format is not None and log_format not in LOG_FORMATS:
        raise ConfigError(f"--log-format {log_format}: use one of {', '.join(LOG_FORMATS)}")
    console = out.isatty() if log_format is None else log_format == "console"
    renderer: structlog.typing.Processor = (
        # Exceptions arrive as text (format_exc_info): the formatter is never called, and
        # naming it keeps the renderer the same whether or not structlog saw rich.
        structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
        if console
        else structlog.processors.JSONRenderer()
    )
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    sink = _Sink(out)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, sink)),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(cast(TextIO, sink))
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *shared,
                _add_logger_name,
                structlog.stdlib.ExtraAdder(),
                _drop_color_message,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    # The Stripe SDK logs two info lines per request: thousands a run, below debug.
    logging.getLogger("stripe").setLevel(
        numeric_level if numeric_level <= logging.DEBUG else max(numeric_level, logging.WARNING)
    )


def bind_log_context(**values: Any) -> None:
    """Add `values` to every event logged in this context (thread) until unbound."""
    structlog.contextvars.bind_contextvars(**values)


def unbind_log_context(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
