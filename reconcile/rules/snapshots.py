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

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

__all__ = [
    "CUSTOMER_COLUMNS",
    "META_PREFIX",
    "STRING_DTYPE",
    "USER_COLUMNS",
    "customers_frame",
    "customers_frame_from_pages",
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
    # One pass per column with list comprehensions (no per-row appends or calls): the
    # loop over a million dicts is the cost here, so each column is read in C-speed steps.
    rows = records if isinstance(records, list) else list(records)
    invoice = [r.get("invoice_settings") for r in rows]
    pm_values = [
        i.get("default_payment_method") if isinstance(i, dict) else r.get("default_payment_method")
        for r, i in zip(rows, invoice, strict=True)
    ]
    default_pms = [v if v is None or type(v) is str else _payment_method_id(v) for v in pm_values]
    metadata = [r.get("metadata") or _NO_METADATA for r in rows]
    meta_values = [[m.get(key) for m in metadata] for key in keys]
    frame = pd.DataFrame(
        {
            "customer_id": _string_array([r["id"] for r in rows]),
            "email": _string_array([r.get("email") for r in rows]),
            "name": _string_array([r.get("name") for r in rows]),
            "created": pd.array([int(r.get("created") or 0) for r in rows], dtype="int64"),
            "livemode": pd.array([bool(r.get("livemode", False)) for r in rows], dtype="bool"),
            "default_payment_method": _string_array([v or None for v in default_pms]),
        }
    )
    for key, values in zip(keys, meta_values, strict=True):
        frame[meta_column(key)] = _string_array(values)
    return frame


_NO_METADATA: Mapping[str, Any] = {}


def _string_array(values: list[Any]) -> Any:
    """A nullable string array; values that are not strings (numbers in metadata) as text."""
    try:
        return pd.arrays.ArrowStringArray(pa.array(values, type=pa.large_string()))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        text = [v if v is None or isinstance(v, str) else str(v) for v in values]
        return pd.array(text, dtype=STRING_DTYPE)


def _json_schema(keys: Sequence[str]) -> pa.Schema:
    text = pa.large_string()
    return pa.schema(
        [
            ("id", text),
            ("email", text),
            ("name", text),
            ("created", pa.int64()),
            ("livemode", pa.bool_()),
            ("invoice_settings", pa.struct([("default_payment_method", text)])),
            ("default_payment_method", text),
            ("metadata", pa.struct([(key, text) for key in keys])),
        ]
    )


def _one_array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    # pa.chunked_array([chunked]) would go through Python objects: combine in C++.
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array if array.type == pa.large_string() else array.cast(pa.large_string())


def _as_strings(column: pa.ChunkedArray | pa.Array) -> Any:
    return pd.arrays.ArrowStringArray(_one_array(column))


# Pages parsed by Arrow at a time: about 17 MB of JSON, so a million customers never sit
# in memory as text all at once.
PAGES_PER_CHUNK = 256


def customers_frame_from_pages(
    bodies: Iterable[bytes], metadata_keys: Sequence[str]
) -> pd.DataFrame:
    """The customers snapshot from list pages as Stripe sent them (JSON list objects, the
    listing's stored parts), parsed by Arrow in C++; the same as `customers_frame` on
    their customers, in page order.

    A chunk of pages where a field has another shape than a plain listing gives (an
    expanded payment method, a number in metadata) is parsed in Python instead.
    """
    keys = list(dict.fromkeys(metadata_keys))
    frames = [_frame_from_chunk(list(chunk), keys) for chunk in _chunks(bodies)]
    if not frames:
        return customers_frame([], keys)
    if len(frames) == 1:
        return frames[0]
    frame = pd.concat(frames, ignore_index=True)
    # One Arrow chunk per column: compare's kernels (is_in, take, factorize) run far
    # slower over the hundreds of chunks a million customers would otherwise leave.
    for column in frame.columns:
        values = frame[column].array
        if isinstance(values, pd.arrays.ArrowStringArray):
            frame[column] = pd.arrays.ArrowStringArray(_one_array(pa.array(values)))
    return frame


def _chunks(bodies: Iterable[bytes]) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for body in bodies:
        chunk.append(body)
        if len(chunk) == PAGES_PER_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _frame_from_chunk(bodies: list[bytes], keys: list[str]) -> pd.DataFrame:
    text = b"\n".join(bodies)
    schema = pa.schema([("data", pa.list_(pa.struct(list(_json_schema(keys)))))])
    try:
        table = pa_json.read_json(
            pa.BufferReader(text),
            # One block for the chunk: a block must hold a whole page.
            read_options=pa_json.ReadOptions(block_size=max(1 << 20, len(text) + 1)),
            parse_options=pa_json.ParseOptions(
                explicit_schema=schema,
                unexpected_field_behavior="ignore",
                # Stripe's own bodies are indented over many lines.
                newlines_in_values=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return customers_frame(_records_of(bodies), keys)
    pages = table.column("data")
    if table.num_rows != len(bodies) or pages.null_count:
        return customers_frame(_records_of(bodies), keys)
    customers = pc.list_flatten(pages.combine_chunks())
    return _frame_from_structs(customers, keys)


def _records_of(bodies: list[bytes]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for body in bodies:
        page = json.loads(body)
        data = page.get("data") if isinstance(page, dict) else None
        if not isinstance(data, list) or not all(isinstance(r, dict) and "id" in r for r in data):
            raise ValueError(
                "a stored page holds no customer list: the listing's parts are damaged"
            )
        records.extend(data)
    return records


def _frame_from_structs(customers: pa.StructArray, keys: list[str]) -> pd.DataFrame:
    def field(name: str) -> pa.Array:
        return pc.struct_field(customers, name)

    invoice = field("invoice_settings")
    # `invoice_settings` present (even with no default in it) wins, as in customers_frame.
    default_pm = pc.if_else(
        pc.is_valid(invoice),
        pc.struct_field(invoice, "default_payment_method"),
        field("default_payment_method"),
    )
    default_pm = pc.if_else(
        pc.equal(default_pm, ""), pa.scalar(None, pa.large_string()), default_pm
    )
    frame = pd.DataFrame(
        {
            "customer_id": _as_strings(field("id")),
            "email": _as_strings(field("email")),
            "name": _as_strings(field("name")),
            "created": pc.fill_null(field("created"), 0)
            .to_numpy(zero_copy_only=False)
            .astype("int64"),
            "livemode": pc.fill_null(field("livemode"), False)
            .to_numpy(zero_copy_only=False)
            .astype(bool),
            "default_payment_method": _as_strings(default_pm),
        }
    )
    metadata = field("metadata")
    for key in keys:
        values = pc.struct_field(metadata, key)
        # A record without metadata at all: every key absent.
        values = pc.if_else(pc.is_valid(metadata), values, pa.scalar(None, pa.large_string()))
        frame[meta_column(key)] = _as_strings(values)
    if pc.any(pc.is_null(field("id"))).as_py():
        raise ValueError("a stored customer has no id: the listing's parts are damaged")
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
