"""The two snapshots compare works on: Stripe customers and local users, as DataFrames.

Both use pandas' nullable string dtype for every text column, so "absent" is always
`pd.NA` and never a mix of None, NaN and "None".

Customers (`customers_frame`): `customer_id`, `email`, `name`, `created` (int64),
`livemode` (bool), `default_payment_method` (an id or NA), and `meta.<key>` per requested
metadata key (string or NA).

Users (`USER_COLUMNS`, produced by the user-DB reader, coerced by `normalize_users`):
`user_id` (string), `email`, `name`, `customer_id` (string or NA; "" is NA), `deleted`
(bool), and `meta.<stripe_key>` (string or NA) for each mapped metadata key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

__all__ = [
    "CUSTOMER_COLUMNS",
    "META_PREFIX",
    "STRING_DTYPE",
    "USER_COLUMNS",
    "customers_frame",
    "empty_customers",
    "empty_users",
    "meta_column",
    "normalize_users",
]

STRING_DTYPE = pd.StringDtype()
META_PREFIX = "meta."

CUSTOMER_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "email",
    "name",
    "created",
    "livemode",
    "default_payment_method",
)

USER_COLUMNS: tuple[str, ...] = ("user_id", "email", "name", "customer_id", "deleted")
"""Fixed columns of the users snapshot; `meta.<stripe_key>` columns follow, one per mapped key."""


def meta_column(key: str) -> str:
    """The snapshot column holding Stripe metadata key `key`."""
    return f"{META_PREFIX}{key}"


def _payment_method_id(value: Any) -> str | None:
    # The list endpoint returns an id, or the whole object under expand[]=...default_payment_method.
    if isinstance(value, Mapping):
        pm_id = value.get("id")
        return str(pm_id) if pm_id else None
    return str(value) if value else None


def customers_frame(
    records: Iterable[Mapping[str, Any]], metadata_keys: Sequence[str]
) -> pd.DataFrame:
    """Stripe customer dicts (`to_dict()` of list results) to the customers snapshot.

    The default payment method is read from `invoice_settings.default_payment_method`
    (an id or an expanded object); a top-level `default_payment_method` key, as in the
    seed generator's plain records, is used when `invoice_settings` is absent.
    """
    keys = list(dict.fromkeys(metadata_keys))
    ids: list[Any] = []
    emails: list[Any] = []
    names: list[Any] = []
    created: list[int] = []
    livemode: list[bool] = []
    default_pms: list[str | None] = []
    meta_values: list[list[Any]] = [[] for _ in keys]
    for record in records:
        ids.append(record["id"])
        emails.append(record.get("email"))
        names.append(record.get("name"))
        created.append(int(record.get("created") or 0))
        livemode.append(bool(record.get("livemode", False)))
        invoice_settings = record.get("invoice_settings")
        if isinstance(invoice_settings, Mapping):
            default_pms.append(_payment_method_id(invoice_settings.get("default_payment_method")))
        else:
            default_pms.append(_payment_method_id(record.get("default_payment_method")))
        metadata = record.get("metadata") or {}
        for values, key in zip(meta_values, keys, strict=True):
            value = metadata.get(key)
            values.append(None if value is None else str(value))
    frame = pd.DataFrame(
        {
            "customer_id": pd.array(ids, dtype=STRING_DTYPE),
            "email": pd.array(emails, dtype=STRING_DTYPE),
            "name": pd.array(names, dtype=STRING_DTYPE),
            "created": pd.array(created, dtype="int64"),
            "livemode": pd.array(livemode, dtype="bool"),
            "default_payment_method": pd.array(default_pms, dtype=STRING_DTYPE),
        }
    )
    for key, values in zip(keys, meta_values, strict=True):
        frame[meta_column(key)] = pd.array(values, dtype=STRING_DTYPE)
    return frame


def empty_customers(metadata_keys: Sequence[str] = ()) -> pd.DataFrame:
    """A customers snapshot with no rows."""
    return customers_frame([], metadata_keys)


def _strings(values: pd.Series) -> pd.Series:
    if values.dtype == STRING_DTYPE:
        return values
    as_object = values.astype(object)
    return (
        as_object.where(as_object.notna(), None)
        .map(lambda v: v if v is None or isinstance(v, str) else str(v))
        .astype(STRING_DTYPE)
    )


def normalize_users(frame: pd.DataFrame, metadata_keys: Sequence[str]) -> pd.DataFrame:
    """Coerce a users frame to the snapshot's columns and dtypes.

    Missing optional columns (`name`, `deleted`, `meta.<key>`) are filled as absent;
    `user_id` and metadata are compared as strings, an empty customer id means none.
    """
    if "user_id" not in frame.columns:
        raise ValueError("users frame has no 'user_id' column; map the id column to user_id")
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    source = frame.reset_index(drop=True)
    for column in ("user_id", "email", "name", "customer_id"):
        if column in source.columns:
            out[column] = _strings(source[column])
        else:
            out[column] = pd.array([None] * len(source), dtype=STRING_DTYPE)
    customer_ids = out["customer_id"].str.strip()
    out["customer_id"] = customer_ids.mask(customer_ids.eq("").fillna(False))
    if "deleted" in source.columns:
        out["deleted"] = source["deleted"].fillna(False).astype(bool)
    else:
        out["deleted"] = False
    for key in dict.fromkeys(metadata_keys):
        column = meta_column(key)
        if column in source.columns:
            out[column] = _strings(source[column])
        else:
            out[column] = pd.array([None] * len(source), dtype=STRING_DTYPE)
    return out


def empty_users(metadata_keys: Sequence[str] = ()) -> pd.DataFrame:
    """A users snapshot with no rows."""
    return normalize_users(pd.DataFrame({"user_id": []}), metadata_keys)
