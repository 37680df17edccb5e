"""Short test keys against a local API, refusals that say why, and an example config that
is safe to copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconcile.errors import ConfigError
from reconcile.mode import Mode, is_local_api_base, mode_of_key
from reconcile.settings import load_settings
from reconcile.stripe_api.gateway import DEFAULT_API_BASE, StripeGateway

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "stripe-reconcile.example.toml"


@pytest.mark.parametrize(
    ("api_base", "local"),
    [
        ("http://127.0.0.1:12111", True),
        ("http://127.1.2.3:12111", True),
        ("http://localhost:12111", True),
        ("http://[::1]:12111", True),
        ("http://stripe-mock:12111", True),  # a docker-compose service
        ("https://api.stripe.com", False),
        ("http://mock.internal:12111", False),
        ("http://10.0.0.5:12111", False),
        (None, False),
    ],
)
def test_which_api_bases_are_local(api_base: str | None, local: bool) -> None:
    assert is_local_api_base(api_base) is local


def test_a_short_test_key_is_accepted_against_a_local_api() -> None:
    assert mode_of_key("sk_test_123", "http://127.0.0.1:12111") is Mode.TEST
    assert mode_of_key("rk_test_1", "http://stripe-mock:12111") is Mode.TEST
    settings = load_settings(
        None, env={"STRIPE_SECRET_KEY": "sk_test_123", "STRIPE_API_BASE": "http://127.0.0.1:9"}
    )
    assert settings.mode is Mode.TEST
    gateway = StripeGateway("sk_test_123", api_base="http://127.0.0.1:9")
    try:
        assert gateway.mode is Mode.TEST
    finally:
        gateway.close()


def _refusal(key: str, api_base: str | None) -> str:
    with pytest.raises(ConfigError) as raised:
        mode_of_key(key, api_base)
    message = raised.value.message
    # Only the masked form: the prefix and, for a long key, its last four characters.
    assert key not in message or key.endswith("_")
    assert "\n" not in message
    assert raised.value.exit_code == 2
    return message


def test_a_short_key_is_refused_elsewhere_saying_why_and_what_to_do() -> None:
    message = _refusal("sk_test_123", None)
    assert message == (
        "STRIPE_SECRET_KEY sk_test_... is too short for a Stripe key (3 character(s) after "
        "the prefix, Stripe's keys have at least 8): copy the whole key from the Stripe "
        "dashboard; against stripe-mock or the sandbox set [stripe] api_base (or "
        "STRIPE_API_BASE) to its local address, e.g. http://127.0.0.1:12111, and any test "
        "key is accepted"
    )
    assert "too short" in _refusal("sk_test_123", "https://api.stripe.com")
    # A live key is never short, wherever it goes; the mock hint would not help.
    live = _refusal("sk_live_123", "http://127.0.0.1:12111")
    assert "too short" in live
    assert "api_base" not in live


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("sk_test_", "nothing follows the prefix"),
        ("sk_test_abc def ghi jkl", "only letters and digits"),
        ("sk_prod_" + "f" * 24, "it must start with sk_test_..."),
    ],
)
def test_other_malformed_keys_say_what_is_wrong(key: str, why: str) -> None:
    message = _refusal(key, "http://127.0.0.1:12111")
    assert "malformed" in message
    assert why in message


def _dump(settings: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = settings.model_dump()
    return dumped


def test_the_example_config_is_the_defaults_and_talks_to_stripe(tmp_path: Path) -> None:
    example = load_settings(EXAMPLE, env={})
    defaults = load_settings(None, env={})
    assert example.stripe.api_base is None
    gateway = StripeGateway("sk_test_" + "a1B2" * 6, api_base=example.stripe.api_base)
    try:
        assert gateway.api_base == DEFAULT_API_BASE == "https://api.stripe.com"
    finally:
        gateway.close()
    # The documented difference: relative paths are relative to the file's folder.
    folder = EXAMPLE.parent
    assert example.userdb.url == f"sqlite:///{folder / 'users.db'}"
    assert example.state.url == f"sqlite:///{folder / 'stripe-reconcile-state.db'}"
    assert example.reports.out == folder / "output"
    moved = example.model_copy(
        update={
            "userdb": example.userdb.model_copy(update={"url": defaults.userdb.url}),
            "state": defaults.state,
            "reports": example.reports.model_copy(update={"out": defaults.reports.out}),
        }
    )
    assert _dump(moved) == _dump(defaults)


def test_the_example_never_sets_api_base_on_an_uncommented_line() -> None:
    lines = [line.strip() for line in EXAMPLE.read_text().splitlines()]
    assert not [line for line in lines if line.startswith("api_base")]
    assert '# api_base = "http://127.0.0.1:12111"   # for the sandbox or stripe-mock only' in (
        lines
    )
