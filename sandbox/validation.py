"""Stripe's value rules: metadata limits, email syntax, card numbers and expiry, bank
account numbers (IBAN, US routing and account numbers)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from sandbox.apierrors import card_error, invalid_request

__all__ = [
    "MAX_METADATA_KEYS",
    "MAX_METADATA_KEY_LENGTH",
    "MAX_METADATA_VALUE_LENGTH",
    "card_brand",
    "check_account_number",
    "check_card",
    "check_email",
    "check_expiry",
    "check_iban",
    "check_metadata",
    "check_routing_number",
    "merge_metadata",
]

MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def check_metadata(update: Mapping[str, str] | str, current: Mapping[str, str]) -> None:
    """Raise Stripe's 400 when `update` is invalid or the merged result exceeds 50 keys."""
    if isinstance(update, str):
        return
    for key, value in update.items():
        if not key:
            raise invalid_request("Invalid metadata: keys must not be empty", param="metadata")
        if "[" in key or "]" in key:
            raise invalid_request(
                f"Invalid metadata: keys cannot contain '[' or ']', got '{key}'",
                param="metadata",
            )
        if len(key) > MAX_METADATA_KEY_LENGTH:
            raise invalid_request(
                f"Invalid metadata: keys can be up to {MAX_METADATA_KEY_LENGTH} characters long, "
                f"but key '{key[:40]}...' has {len(key)}",
                param="metadata",
            )
        if len(value) > MAX_METADATA_VALUE_LENGTH:
            raise invalid_request(
                f"Invalid metadata: values can be up to {MAX_METADATA_VALUE_LENGTH} characters "
                f"long, but the value for '{key}' has {len(value)}",
                param=f"metadata[{key}]",
            )
    merged = merge_metadata(current, update)
    if len(merged) > MAX_METADATA_KEYS:
        raise invalid_request(
            f"Invalid metadata: metadata can have up to {MAX_METADATA_KEYS} keys, "
            f"but this request would leave {len(merged)}",
            param="metadata",
        )


def merge_metadata(current: Mapping[str, str], update: Mapping[str, str] | str) -> dict[str, str]:
    """Stripe's merge: keys in `update` overwrite, `""` deletes a key, `update == ""` clears."""
    if isinstance(update, str):
        return {}
    merged = dict(current)
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def check_email(email: str) -> None:
    # The address itself stays out of the message: it is personal data.
    if len(email) > 512 or not _EMAIL.match(email):
        raise invalid_request(
            "Invalid email address: the value of 'email' is not a valid address",
            param="email",
            code="email_invalid",
        )


def card_brand(number: str) -> str:
    """The brand Stripe derives from the leading digits (IIN ranges)."""
    if number.startswith("4"):
        return "visa"
    two, four = int(number[:2] or 0), int(number[:4] or 0)
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "mastercard"
    if two in (34, 37):
        return "amex"
    if number.startswith(("6011", "65")) or 644 <= int(number[:3] or 0) <= 649:
        return "discover"
    if two in (30, 36, 38, 39):
        return "diners"
    if two == 35:
        return "jcb"
    if two == 62:
        return "unionpay"
    return "unknown"


def _luhn_ok(number: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def check_card(
    number: str, exp_month: int, exp_year: int, *, this_year: int, this_month: int
) -> tuple[str, int]:
    """The digits and four-digit expiry year of a valid card; Stripe's 402 otherwise."""
    digits = number.replace(" ", "")
    if not digits.isdigit() or not 12 <= len(digits) <= 19 or not _luhn_ok(digits):
        raise card_error(
            "Your card number is incorrect.", code="incorrect_number", param="card[number]"
        )
    return digits, check_expiry(exp_month, exp_year, this_year=this_year, this_month=this_month)


def check_expiry(exp_month: int, exp_year: int, *, this_year: int, this_month: int) -> int:
    """The four-digit expiry year of a card not yet expired; Stripe's 402 otherwise."""
    if not 1 <= exp_month <= 12:
        raise card_error(
            "Your card's expiration month is invalid.",
            code="invalid_expiry_month",
            param="card[exp_month]",
        )
    if exp_year < 100:
        exp_year += 2000
    if exp_year < this_year or exp_year > this_year + 50:
        raise card_error(
            "Your card's expiration year is invalid.",
            code="invalid_expiry_year",
            param="card[exp_year]",
        )
    if exp_year == this_year and exp_month < this_month:
        raise card_error(
            "Your card's expiration month is invalid.",
            code="invalid_expiry_month",
            param="card[exp_month]",
        )
    return exp_year


def check_iban(iban: str) -> str:
    """The IBAN without spaces, upper-cased, once its length and ISO 13616 checksum pass.
    The value stays out of the message: it identifies a bank account."""
    compact = iban.replace(" ", "").upper()
    valid = (
        15 <= len(compact) <= 34
        and compact[:2].isalpha()
        and compact[2:4].isdigit()
        and compact.isalnum()
        and compact.isascii()
    )
    if valid:
        digits = "".join(str(int(ch, 36)) for ch in compact[4:] + compact[:4])
        valid = int(digits) % 97 == 1
    if not valid:
        raise invalid_request(
            "The IBAN you provided is invalid: check its country code, length and check digits.",
            param="sepa_debit[iban]",
        )
    return compact


def check_routing_number(routing_number: str) -> None:
    """Nine digits with the ABA checksum, as US routing numbers carry."""
    digits = routing_number if routing_number.isdigit() and len(routing_number) == 9 else ""
    weights = (3, 7, 1) * 3
    if not digits or sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 10:
        raise invalid_request(
            "Routing number must have 9 digits and a valid checksum.",
            param="us_bank_account[routing_number]",
            code="routing_number_invalid",
        )


def check_account_number(account_number: str) -> None:
    if not (account_number.isdigit() and 4 <= len(account_number) <= 17):
        raise invalid_request(
            "The bank account number must be 4 to 17 digits.",
            param="us_bank_account[account_number]",
            code="account_number_invalid",
        )
