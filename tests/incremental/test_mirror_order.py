"""The mirror after an update is in a listing's order (newest first, then by id), as pandas'
two-key sort gives it, ties within a second included."""

from __future__ import annotations

from typing import Literal

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from jobs.incremental import newest_first


@pytest.mark.parametrize("created_dtype", ["int64", "Int64"])
def test_newest_first_is_pandas_order_with_ties_in_a_second(
    created_dtype: Literal["int64", "Int64"],
) -> None:
    ids = [f"cus_{n:03d}" for n in (7, 3, 9, 1, 5, 2, 8, 4, 6, 0)]
    frame = pd.DataFrame(
        {
            "customer_id": pd.array(ids, dtype="string"),
            "created": pd.Series([5, 9, 5, 1, 9, 5, 1, 7, 9, 3], index=range(10, 20)).astype(
                created_dtype
            ),
            "email": pd.array([None, "a@x.com"] * 5, dtype="string"),
        },
        index=range(10, 20),
    )
    expected = frame.sort_values(
        ["created", "customer_id"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)

    ordered = newest_first(frame)

    assert_frame_equal(ordered, expected)
    assert list(ordered["customer_id"][:3]) == ["cus_003", "cus_005", "cus_006"]
