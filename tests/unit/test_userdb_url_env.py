"""The user DB URL from the environment or a mounted Secret file, over `[userdb] url`."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog.testing

from reconcile.errors import ConfigError, UserDBError
from reconcile.settings import load_settings
from reconcile.userdb import UserDB

_PASSWORD = "s3cret-pw"
_URL = f"postgresql+psycopg://reconcile:{_PASSWORD}@db.internal:5432/app"


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('[userdb]\nurl = "sqlite:///from-config.db"\ntable = "users"\n')
    return path


def test_url_from_the_environment_overrides_the_file(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path), env={"STRIPE_RECONCILE_USERDB_URL": _URL})
    assert settings.userdb.url == _URL
    assert settings.userdb.table == "users"  # the rest of [userdb] still comes from the file


def test_url_from_a_mounted_secret_file_without_its_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "userdb-url"
    secret.write_text(_URL + "\n")
    settings = load_settings(
        _config(tmp_path), env={"STRIPE_RECONCILE_USERDB_URL_FILE": str(secret)}
    )
    assert settings.userdb.url == _URL


def test_without_either_variable_the_file_decides(tmp_path: Path) -> None:
    # A relative SQLite path in the file is relative to the file's folder.
    expected = f"sqlite:///{tmp_path / 'from-config.db'}"
    assert load_settings(_config(tmp_path), env={}).userdb.url == expected
    assert load_settings(None, env={"STRIPE_RECONCILE_USERDB_URL": _URL}).userdb.url == _URL


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"STRIPE_RECONCILE_USERDB_URL": _URL, "STRIPE_RECONCILE_USERDB_URL_FILE": "/x"},
            "both STRIPE_RECONCILE_USERDB_URL and STRIPE_RECONCILE_USERDB_URL_FILE are set",
        ),
        (
            {"STRIPE_RECONCILE_USERDB_URL_FILE": "/nonexistent/userdb-url"},
            "STRIPE_RECONCILE_USERDB_URL_FILE=/nonexistent/userdb-url cannot be read",
        ),
    ],
)
def test_bad_variables_are_one_line_exit_2(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_config(tmp_path), env=env)
    assert expected in caught.value.message
    assert "\n" not in caught.value.message
    assert _PASSWORD not in caught.value.message
    assert caught.value.exit_code == 2


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "userdb-url"
    secret.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_settings(None, env={"STRIPE_RECONCILE_USERDB_URL_FILE": str(secret)})


def test_the_password_is_never_in_logs_or_errors(tmp_path: Path) -> None:
    secret = tmp_path / "userdb-url"
    # A server that is not there: the error names the URL, without its password.
    secret.write_text(f"postgresql+psycopg://reconcile:{_PASSWORD}@127.0.0.1:1/app\n")
    settings = load_settings(None, env={"STRIPE_RECONCILE_USERDB_URL_FILE": str(secret)})
    db = UserDB(settings.userdb)
    try:
        with structlog.testing.capture_logs() as logs, pytest.raises(UserDBError) as caught:
            db.inspect()
    finally:
        db.close()
    assert _PASSWORD not in str(caught.value)
    assert _PASSWORD not in repr(logs)
