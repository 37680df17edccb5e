from __future__ import annotations

from pathlib import Path

import pytest

from reconcile.errors import ConfigError
from reconcile.mode import Mode
from reconcile.settings import load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "stripe-reconcile.example.toml"
TEST_KEY = "sk_test_" + "a1B2" * 6


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_configuration_loads_with_every_documented_setting() -> None:
    settings = load_settings(EXAMPLE, env={"STRIPE_SECRET_KEY": TEST_KEY})
    assert settings.stripe.api_base is None  # Stripe itself: a copied example is safe
    assert settings.stripe.max_requests_per_second == 0
    assert settings.userdb.table == "users"
    assert settings.userdb.customer_id_column == "stripe_customer_id"
    assert settings.userdb.deleted_column == "deleted_at"
    assert settings.userdb.metadata == {"plan": "plan"}
    assert settings.userdb.scope == {}
    assert settings.state.url == f"sqlite:///{EXAMPLE.parent / 'stripe-reconcile-state.db'}"
    assert settings.reports.formats == ["csv", "parquet"]
    assert settings.reports.file_mode == 0o600
    assert settings.mode is Mode.TEST
    assert settings.max_requests_per_second() == 25


def test_no_file_means_the_documented_defaults() -> None:
    settings = load_settings(None, env={})
    assert settings.userdb.url == "sqlite:///users.db"
    assert settings.stripe.api_base is None
    assert settings.secret_key is None


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[userdb]\ntable = "accounts"\n')
    settings = load_settings(None, env={"STRIPE_RECONCILE_CONFIG": str(path)})
    assert settings.userdb.table == "accounts"


def test_environment_overrides_api_base_and_reads_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(TEST_KEY + "\n")
    settings = load_settings(
        write(tmp_path, '[stripe]\napi_base = "http://a:1"\n'),
        env={"STRIPE_API_BASE": "http://127.0.0.1:9/", "STRIPE_SECRET_KEY_FILE": str(key_file)},
    )
    assert settings.stripe.api_base == "http://127.0.0.1:9"
    assert settings.require_key() == TEST_KEY


def test_live_mode_allows_up_to_100_per_second(tmp_path: Path) -> None:
    path = write(tmp_path, "[stripe]\nmax_requests_per_second = 60\n")
    settings = load_settings(path, env={"STRIPE_SECRET_KEY": "rk_live_" + "Z9" * 12})
    assert settings.mode is Mode.LIVE
    assert settings.max_requests_per_second() == 60


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("[stripe\n", {}, "is not valid TOML"),
        ("[userdb]\ntabel = 'users'\n", {}, "[userdb] tabel: unknown setting"),
        ("[stripe]\nmax_requests_per_second = 'fast'\n", {}, "[stripe] max_requests_per_second"),
        ("[stripe]\nmax_requests_per_second = -1\n", {}, "must be 0 or more, got the number -1"),
        ("[stripe]\napi_base = 'localhost:12111'\n", {}, "must be an http:// or https:// URL"),
        ("[userdb]\ntable = 'users; drop table x'\n", {}, "[userdb] table"),
        ("[userdb.metadata]\n'plan[x]' = 'plan'\n", {}, "breaks Stripe's rules"),
        ("[reports]\nformats = ['xlsx']\n", {}, "[reports] formats"),
        ("[stripe]\nsecret_key = 'sk_test_x'\n", {}, "holds a Stripe key"),
        (
            "[stripe]\nmax_requests_per_second = 30\n",
            {"STRIPE_SECRET_KEY": TEST_KEY},
            "above Stripe's test-mode limit of 25/s",
        ),
        ("", {"STRIPE_SECRET_KEY": "sk_test_abc", "STRIPE_SECRET_KEY_FILE": "/x"}, "keep only one"),
        ("", {"STRIPE_SECRET_KEY_FILE": "/nonexistent/key"}, "cannot be read"),
    ],
)
def test_bad_settings_are_one_line_naming_the_setting(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), env=env)
    message = raised.value.message
    assert expected in message
    assert "\n" not in message
    assert raised.value.exit_code == 2


def test_missing_configuration_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found: pass an existing file"):
        load_settings(tmp_path / "nope.toml", env={})


def test_missing_key_is_explained_only_when_needed() -> None:
    settings = load_settings(None, env={})
    with pytest.raises(ConfigError, match="no Stripe key: set STRIPE_SECRET_KEY"):
        settings.require_key()
