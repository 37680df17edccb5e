# One case per line, so the tables read as tables: long lines are allowed here.
# ruff: noqa: E501
"""Typed job options, the one live-confirmation rule, and the settings that refuse at load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobs.apply import (
    CONFIRM_LIVE_ENV,
    confirm_live_from_env,
    live_confirmed,
)
from jobs.card_expiry_job import live_send_confirmed
from jobs.registry import JOBS
from reconcile.errors import EXIT_CONFIG, ConfigError
from reconcile.job_options import (
    OPTION_MODELS,
    CardExpiryOptions,
    LinkUsersOptions,
    WriteJobOptions,
    parse_job_options,
    scheduled_options,
)
from reconcile.settings import load_settings

TEST_KEY = "sk_test_" + "OptionsKey000000000abcd"
LIVE_KEY = "sk_live_" + "OptionsKey000000000abcd"
WHERE = "[schedule.jobs.sync-metadata]"


def _refused(job: str, raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_job_options(job, raw, where=f"[schedule.jobs.{job}]")
    assert raised.value.exit_code == EXIT_CONFIG
    assert "\n" not in raised.value.message
    return raised.value.message


def test_every_job_has_one_option_model_and_the_write_jobs_share_the_write_options() -> None:
    assert set(OPTION_MODELS) == set(JOBS)
    for name, job in JOBS.items():
        assert issubclass(OPTION_MODELS[name], WriteJobOptions) == job.writes, name
    assert OPTION_MODELS["link-users"] is LinkUsersOptions


def test_the_string_false_is_refused_never_read_as_true() -> None:
    message = _refused("sync-metadata", {"apply": "false"})
    assert message == (
        "[schedule.jobs.sync-metadata] options.apply: expected true or false, "
        'got the string "false"'
    )


@pytest.mark.parametrize(
    ("job", "raw", "expected"),
    [
        ("sync-metadata", {"confirm_live": "no"}, 'options.confirm_live: expected true or false'),
        ("sync-metadata", {"apply": 1}, "options.apply: expected true or false, got the number 1"),
        ("dedupe", {"max_changes": "50"}, 'options.max_changes: expected a whole number, got the string "50"'),
        ("dedupe", {"max_changes": 2.5}, "options.max_changes: expected a whole number"),
        ("dedupe", {"max_changes": True}, "options.max_changes: expected a whole number, got true"),
        ("dedupe", {"max_changes": -1}, "options.max_changes: must be 0 or more, got the number -1"),
        ("card-expiry", {"days": 4000}, "options.days: must be 3650 or less"),
        ("card-expiry", {"send": "yes"}, 'options.send: expected true or false, got the string "yes"'),
        ("reconcile", {"fail_on": "fatal"}, "options.fail_on: expected 'info', 'warning' or 'error'"),
        ("reconcile", {"apply": True}, "options.apply: unknown option; reconcile takes email, fail_on, "),
        ("link-users", {"create_missing": "true"}, "options.create_missing: expected true or false"),
        ("gdpr-delete", {"aply": True}, "options.aply: unknown option; gdpr-delete takes apply, confirm_live"),
        ("sync-metadata", {"apply": [True]}, "options.apply: expected true or false, got a list"),
    ],
)  # fmt: skip
def test_wrong_types_and_unknown_keys_are_one_line_naming_the_option(
    job: str, raw: dict[str, Any], expected: str
) -> None:
    message = _refused(job, raw)
    assert message.startswith(f"[schedule.jobs.{job}] ")
    assert expected in message


def test_an_unknown_job_is_refused_with_the_list_of_jobs() -> None:
    message = _refused("sync-metdata", {})
    assert "no job is called 'sync-metdata'" in message
    assert "sync-metadata" in message


def test_the_job_receives_a_mapping_with_the_same_keys_as_before() -> None:
    options = parse_job_options(
        "link-users", {"apply": True, "create_missing": True}, where=WHERE
    ).as_mapping()
    assert options == {
        "resume": False,
        "fail_on": None,
        "email": None,
        "apply": True,
        "max_changes": 100,
        "confirm_live": False,
        "create_missing": True,
    }
    card = parse_job_options("card-expiry", {"days": 7}, where=WHERE)
    assert isinstance(card, CardExpiryOptions)
    assert card.as_mapping()["days"] == 7
    assert parse_job_options("card-expiry", {}, where=WHERE).as_mapping()["days"] is None


def test_a_schedule_tables_fail_on_is_folded_in_and_a_contradiction_refused() -> None:
    folded = scheduled_options("reconcile", {}, "error", where="[schedule.jobs.reconcile]")
    assert folded.fail_on == "error"
    same = scheduled_options("reconcile", {"fail_on": "error"}, "error", where="x")
    assert same.fail_on == "error"
    with pytest.raises(ConfigError, match="disagree: keep one of them"):
        scheduled_options("reconcile", {"fail_on": "info"}, "error", where="x")


# --- live confirmation: one rule ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "confirmed"),
    [
        (None, False),
        ("", False),
        ("0", False),
        ("false", False),
        ("no", False),
        (" No ", False),
        ("FALSE", False),
        ("1", True),
        ("true", True),
        ("yes", True),
        (" YES\n", True),
        ("True", True),
    ],
)
def test_the_confirm_live_variable_has_one_rule(value: str | None, confirmed: bool) -> None:
    env = {} if value is None else {CONFIRM_LIVE_ENV: value}
    assert confirm_live_from_env(env) is confirmed
    # Sends read it exactly as writes do (they accepted only "1" before).
    assert live_send_confirmed({}, env) is confirmed


@pytest.mark.parametrize("value", ["maybe", "2", "y", "on", "ja", "true!", "-1", "no way"])
def test_any_other_value_of_the_variable_is_a_config_error_naming_it(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        confirm_live_from_env({CONFIRM_LIVE_ENV: value})
    assert raised.value.exit_code == EXIT_CONFIG
    assert CONFIRM_LIVE_ENV in raised.value.message
    assert "1, true or yes" in raised.value.message
    # Refused even when the option alone would confirm: a typo never passes unnoticed.
    with pytest.raises(ConfigError):
        live_confirmed({"confirm_live": True}, {CONFIRM_LIVE_ENV: value})
    with pytest.raises(ConfigError):
        live_send_confirmed({"confirm_live": True}, {CONFIRM_LIVE_ENV: value})


def test_only_a_real_true_option_confirms() -> None:
    assert live_confirmed({"confirm_live": True}, {})
    for not_true in ("yes", "true", 1, "no", None):
        assert not live_confirmed({"confirm_live": not_true}, {}), not_true
        assert not live_send_confirmed({"confirm_live": not_true}, {}), not_true


# --- settings refused at load ---------------------------------------------------------


def _load_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path, env={"STRIPE_SECRET_KEY": TEST_KEY, **(env or {})})
    assert raised.value.exit_code == EXIT_CONFIG
    assert "\n" not in raised.value.message
    return raised.value.message


def test_schedule_options_are_checked_when_the_configuration_is_loaded(tmp_path: Path) -> None:
    message = _load_error(
        tmp_path,
        '[schedule.jobs.sync-metadata]\ncron = "0 3 * * *"\noptions = { apply = "false" }\n',
    )
    assert message.endswith(
        "[schedule.jobs.sync-metadata] options.apply: expected true or false, "
        'got the string "false"'
    )
    unknown = _load_error(tmp_path, '[schedule.jobs.reconcil]\ncron = "0 3 * * *"\n')
    assert "[schedule.jobs.reconcil]: no job is called 'reconcil'" in unknown
    # A disabled entry is checked too: enabling it later must not reveal a typo.
    disabled = _load_error(
        tmp_path,
        '[schedule.jobs.dedupe]\ncron = "0 3 * * *"\nenabled = false\noptions = { aply = true }\n',
    )
    assert "options.aply: unknown option" in disabled


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[email]\ninclude_personal_data = "no"\n', '[email] include_personal_data: expected true or false, got the string "no"'),
        ('[stripe]\nmax_retries = "5"\n', '[stripe] max_retries: expected a whole number, got the string "5"'),
        ('[schedule.jobs.reconcile]\ncron = "0 3 * * *"\nenabled = "no"\n', "[schedule.jobs.reconcile] enabled: expected true or false"),
        ('[schedule.jobs.reconcile]\ncron = "61 3 * * *"\n', "[schedule.jobs.reconcile] cron: cron expression"),
        ("[stripe]\ntimeout_seconds = 0\n", "[stripe] timeout_seconds: must be more than 0"),
        ("[stripe]\nretry_initial_delay = nan\n", "[stripe] retry_initial_delay: expected a finite number"),
        ('[stripe]\napi_base = "http://[::1"\n', "[stripe] api_base: must be an http:// or https:// URL"),
        ('[stripe]\napi_base = "http://127.0.0.1:port"\n', "[stripe] api_base: must be an http:// or https:// URL"),
        ("[userdb]\nchunk_size = 9999999999999999\n", "[userdb] chunk_size: must be 10000000 or less"),
        ("[resume]\nmax_age_hours = 1e300\n", "[resume] max_age_hours: must be 8784 or less, got the number 1e+300"),
        ("[schedule]\nmisfire_grace_seconds = 99999999999999999\n", "[schedule] misfire_grace_seconds: must be 2678400 or less"),
        ('[email]\nfrom = "ops@example.com, attacker@evil.example"\n', "[email] from: 'ops@example.com, attacker@evil.example' is not one email address: set a single address"),
        ('[metrics]\npushgateway_url = "http://[::1"\n', "[metrics] pushgateway_url: must be an http:// or https:// URL"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_at_load_with_one_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in _load_error(tmp_path, text)


def test_api_base_from_the_environment_is_named_as_such(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "", {"STRIPE_API_BASE": "http://[::1"})
    assert message.startswith("STRIPE_API_BASE: must be an http:// or https:// URL")


def test_timeout_seconds_defaults_to_30_and_reaches_the_http_client(tmp_path: Path) -> None:
    from jobs.runner import build_gateway

    assert load_settings(None, env={"STRIPE_SECRET_KEY": TEST_KEY}).stripe.timeout_seconds == 30
    path = tmp_path / "config.toml"
    path.write_text("[stripe]\ntimeout_seconds = 2.5\n")
    settings = load_settings(path, env={"STRIPE_SECRET_KEY": TEST_KEY})
    gateway = build_gateway(settings)
    try:
        # The SDK's client sends every request (the SDK's and the bulk listing's) with it.
        assert gateway._http._inner._timeout == 2.5  # type: ignore[attr-defined]
    finally:
        gateway.close()


# --- a live key never goes over plain http to another machine -------------------------


@pytest.mark.parametrize(
    "base", ["http://10.1.2.3", "http://api.example.com:8080", "http://[2001:db8::1]:12111"]
)
def test_a_live_key_to_a_plain_http_remote_base_is_refused(tmp_path: Path, base: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[stripe]\napi_base = "{base}"\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(path, env={"STRIPE_SECRET_KEY": LIVE_KEY})
    assert raised.value.exit_code == EXIT_CONFIG
    assert f"[stripe] api_base {base} is plain http to another machine" in raised.value.message
    assert LIVE_KEY not in raised.value.message
    from_env = _live_load_error({"STRIPE_API_BASE": base})
    assert from_env.startswith(f"STRIPE_API_BASE {base} is plain http")


def _live_load_error(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as raised:
        load_settings(None, env={"STRIPE_SECRET_KEY": LIVE_KEY, **env})
    return raised.value.message


@pytest.mark.parametrize(
    ("key", "base"),
    [
        (LIVE_KEY, "http://127.0.0.1:12111"),
        (LIVE_KEY, "http://127.8.9.10:12111"),
        (LIVE_KEY, "http://localhost:12111"),
        (LIVE_KEY, "http://[::1]:12111"),
        (LIVE_KEY, "https://10.1.2.3"),
        (LIVE_KEY, "https://api.stripe.com"),
        ("rk_live_" + "OptionsKey000000000abcd", "https://proxy.example.com"),
        (TEST_KEY, "http://10.1.2.3"),
    ],
)
def test_loopback_http_https_and_test_keys_are_allowed(key: str, base: str) -> None:
    settings = load_settings(None, env={"STRIPE_SECRET_KEY": key, "STRIPE_API_BASE": base})
    assert settings.stripe.api_base == base


def test_a_restricted_live_key_is_refused_like_a_secret_one() -> None:
    with pytest.raises(ConfigError, match="plain http to another machine"):
        load_settings(
            None,
            env={
                "STRIPE_SECRET_KEY": "rk_live_" + "OptionsKey000000000abcd",
                "STRIPE_API_BASE": "http://10.1.2.3",
            },
        )
