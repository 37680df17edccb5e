# One case per line, so the corpus reads as a table: long lines are allowed here.
# ruff: noqa: E501
"""Unusual but valid data: typed metadata columns, unicode and malformed emails, values over
Stripe's limits. The run succeeds and reports exactly what differs, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from sandbox.runner import SandboxServer
from tests.reliability.helpers import FAST_RETRIES, env_for, invoke, write_config
from tests.seeded import TEST_KEY, SeededWorld


def hour_ago() -> int:
    # Listings stop at the run's start second: seeded customers must be older than that.
    return int(time.time()) - 3600


LONG_NOTE = "ü" * 600  # over Stripe's 500-character metadata value limit

_METADATA = {"seats": "seats", "active": "active", "renews": "renews", "price": "price"}
_METADATA_NOTE = {**_METADATA, "note": "note"}


def _users_table() -> sa.Table:
    return sa.Table(
        "typed_users",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(320)),
        sa.Column("name", sa.String(200)),
        sa.Column("stripe_customer_id", sa.String(64)),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
        sa.Column("seats", sa.Integer),
        sa.Column("active", sa.Boolean),
        sa.Column("renews", sa.Date),
        sa.Column("price", sa.Numeric(10, 2)),
        sa.Column("note", sa.Text),
    )


# (user row, customer or None); the customer's metadata holds Stripe's strings.
_SAME = {"seats": 3, "active": True, "renews": dt.date(2026, 1, 31), "price": Decimal("9.50")}
_SAME_META = {"seats": "3", "active": "true", "renews": "2026-01-31", "price": "9.5"}
ROWS: list[tuple[dict[str, object], dict[str, object] | None]] = [
    # Integers, booleans, dates and decimals equal to their Stripe strings: no finding.
    ({"id": 1, "email": "ada@example.com", **_SAME, "note": "vip"},
     {"id": "cus_typed1", "email": "ada@example.com", "metadata": {**_SAME_META, "note": "vip"}}),
    # One integer differs: one stale_metadata row, for that field only.
    ({"id": 2, "email": "bob@example.com", **_SAME, "seats": 4, "note": "x"},
     {"id": "cus_typed2", "email": "bob@example.com", "metadata": {**_SAME_META, "note": "x"}}),
    # A false boolean against Stripe's "true".
    ({"id": 3, "email": "cy@example.com", **_SAME, "active": False, "note": "x"},
     {"id": "cus_typed3", "email": "cy@example.com", "metadata": {**_SAME_META, "note": "x"}}),
    # Unicode email differing only in case and spaces: the same email.
    ({"id": 4, "email": " Zoë.Ünal@Exämple.com", **_SAME, "note": "x"},
     {"id": "cus_typed4", "email": "zoë.ünal@exämple.com", "metadata": {**_SAME_META, "note": "x"}}),
    # A malformed local email: reported as differing, not a crash.
    ({"id": 5, "email": "not-an-email@@", **_SAME, "note": "x"},
     {"id": "cus_typed5", "email": "eve@example.com", "metadata": {**_SAME_META, "note": "x"}}),
    # A local value too long for Stripe's metadata: compared and reported in full.
    ({"id": 6, "email": "fay@example.com", **_SAME, "note": LONG_NOTE},
     {"id": "cus_typed6", "email": "fay@example.com", "metadata": {**_SAME_META, "note": "short"}}),
    # No customer id; a customer carries the same unicode email in capitals: unlinked.
    ({"id": 7, "email": "jürgen@exämple.de", **_SAME, "note": "x"},
     {"id": "cus_typed7", "email": "JÜRGEN@EXÄMPLE.DE", "metadata": {}}),
]  # fmt: skip

EXPECTED = {
    ("stale_metadata", "2", "metadata.seats"),
    ("stale_metadata", "3", "metadata.active"),
    ("stale_metadata", "5", "email"),
    ("stale_metadata", "6", "metadata.note"),
    ("unlinked_user", "7", ""),
}


def _seed(sandbox: SandboxServer, users_url: str) -> None:
    sandbox.store.reset()
    sandbox.faults.clear()
    test_mode = sandbox.store.mode("test")
    table = _users_table()
    engine = sa.create_engine(users_url)
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        for user, customer in ROWS:
            linked = customer is not None and user["id"] != 7
            row = {"name": None, "deleted_at": None, **user}
            row["stripe_customer_id"] = customer["id"] if linked and customer else None
            conn.execute(table.insert().values(**row))
            if customer is not None:
                metadata = dict(customer["metadata"])  # type: ignore[call-overload]
                if user["id"] != 7:
                    metadata["user_id"] = str(user["id"])
                with sandbox.store.lock:
                    test_mode.add_customer({**customer, "metadata": metadata}, created=hour_ago())
    engine.dispose()


def test_typed_columns_unicode_and_malformed_values_are_compared_as_strings(
    sandbox_server: SandboxServer, tmp_path: Path, database_url: str
) -> None:
    _seed(sandbox_server, database_url)
    config = write_config(
        tmp_path / "config.toml",
        {
            "stripe": FAST_RETRIES,
            "userdb": {
                "url": database_url,
                "table": "typed_users",
                "name_column": "",
                "metadata": _METADATA_NOTE,
            },
            "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
            "reports": {"out": str(tmp_path / "out")},
        },
    )
    world = SeededWorld(sandbox_server, None, database_url, None)  # type: ignore[arg-type]
    result = invoke(["run", "reconcile", "--config", str(config)], env_for(world, TEST_KEY))
    assert result.exit_code == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])

    import pandas as pd

    findings = pd.read_csv(run_dir / "findings.csv", dtype=str, keep_default_na=False)
    found = {(r.kind, r.user_id, r.field) for r in findings.itertuples()}
    assert found == EXPECTED
    note = findings[findings["field"] == "metadata.note"].iloc[0]
    assert note["local_value"] == LONG_NOTE
    # Personal data stays in the report; the logs hold neither emails nor the long value.
    assert "@" not in result.stderr
    assert "ü" * 20 not in result.stderr


@pytest.mark.parametrize("bad_email", ["", "   ", "@", "a@b@c", "mañana@例え.jp", "x" * 400])
def test_odd_customer_emails_do_not_break_a_run(
    sandbox_server: SandboxServer, tmp_path: Path, bad_email: str
) -> None:
    """Stripe validates emails loosely and old customers predate its rules: a listing may
    hold anything, and the run must still end with a report."""
    users_url = f"sqlite:///{tmp_path / 'users.db'}"
    _seed(sandbox_server, users_url)
    with sandbox_server.store.lock:
        sandbox_server.store.mode("test").add_customer(
            {"email": bad_email, "metadata": {}}, created=hour_ago()
        )
    config = write_config(
        tmp_path / "config.toml",
        {
            "stripe": FAST_RETRIES,
            "userdb": {"url": users_url, "table": "typed_users", "name_column": "",
                       "metadata": _METADATA},
            "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
            "reports": {"out": str(tmp_path / "out")},
        },
    )  # fmt: skip
    world = SeededWorld(sandbox_server, None, users_url, None)  # type: ignore[arg-type]
    result = invoke(["run", "reconcile", "--config", str(config)], env_for(world, TEST_KEY))
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert Path(result.stdout.strip().splitlines()[-1], "findings.csv").is_file()
