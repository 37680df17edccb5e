from __future__ import annotations

import pytest

from reconcile.errors import ConfigError
from reconcile.mode import Mode, mask_key, mode_of_key


@pytest.mark.parametrize(
    ("key", "mode"),
    [
        ("sk_test_" + "a" * 24, Mode.TEST),
        ("rk_test_" + "b" * 24, Mode.TEST),
        ("sk_live_" + "c" * 24, Mode.LIVE),
        ("rk_live_" + "d" * 99, Mode.LIVE),
    ],
)
def test_mode_from_prefix(key: str, mode: Mode) -> None:
    assert mode_of_key(key) is mode


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("pk_live_" + "e" * 24, "publishable key"),
        ("sk_prod_" + "f" * 24, "malformed"),
        ("sk_test_", "malformed"),
        ("sk_test_abc def ghi jkl", "malformed"),
        ("whsec_" + "g" * 24, "malformed"),
    ],
)
def test_other_strings_are_refused_without_showing_the_key(key: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as raised:
        mode_of_key(key)
    if len(key) > 16:
        assert key not in raised.value.message


def test_mask_shows_prefix_and_last_four_only() -> None:
    key = "sk_live_" + "x" * 20 + "abcd"
    assert mask_key(key) == "sk_live_...abcd"
    assert mask_key("sk_test_short") == "sk_test_..."
    assert "secret" not in mask_key("secretvalue")
