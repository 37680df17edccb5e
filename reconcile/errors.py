"""The project's own errors, each carrying the exit code the CLI turns it into.

Messages are one line, name the input at fault and the fix; they never contain a
full key or personal data.
"""

from __future__ import annotations

__all__ = [
    "EXIT_ACTIONS_FAILED",
    "EXIT_CONFIG",
    "EXIT_DELIVERY_FAILED",
    "EXIT_FINDINGS",
    "EXIT_INTERNAL",
    "EXIT_LOCKED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_STRIPE",
    "EXIT_USERDB",
    "ConfigError",
    "DeliveryError",
    "LockHeldError",
    "ReconcileError",
    "StripeAuthError",
    "StripeConnectionError",
    "StripeError",
    "StripeNotFoundError",
    "UserDBError",
]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_CONFIG = 2
EXIT_STRIPE = 3
EXIT_USERDB = 4
EXIT_LOCKED = 5
EXIT_ACTIONS_FAILED = 6
EXIT_DELIVERY_FAILED = 7
# A lookup (`customer find`) matched nothing: an answer, not a failure of Stripe or the key.
EXIT_NOT_FOUND = 8
# Anything the project did not foresee (a bug): EX_SOFTWARE of sysexits.h.
EXIT_INTERNAL = 70


class ReconcileError(Exception):
    """Base of every error the CLI reports as one line and an exit code."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(ReconcileError):
    """A setting, option or key is wrong; nothing was contacted or written."""

    exit_code = EXIT_CONFIG


class StripeError(ReconcileError):
    """Stripe answered with an error the run cannot go on from."""

    exit_code = EXIT_STRIPE


class StripeAuthError(StripeError):
    """The key was refused (401) or lacks a permission (403)."""


class StripeConnectionError(StripeError):
    """Stripe (or the configured API base) could not be reached after retries."""


class StripeNotFoundError(StripeError):
    """An object does not exist under this key's mode."""

    def __init__(self, message: str, object_id: str, other_mode: bool) -> None:
        super().__init__(message)
        self.object_id = object_id
        self.other_mode = other_mode


class UserDBError(ReconcileError):
    """The user database is unreachable or does not have the configured table or columns."""

    exit_code = EXIT_USERDB


class DeliveryError(ReconcileError):
    """The run completed and its reports are kept, but sending them (email, metrics) failed."""

    exit_code = EXIT_DELIVERY_FAILED


class LockHeldError(ReconcileError):
    """Another run of the same job holds the lease."""

    exit_code = EXIT_LOCKED
