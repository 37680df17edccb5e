# One case per line, so the corpus reads as a table: long lines are allowed here.
# ruff: noqa: E501
"""The bad-input corpus: every case is one line naming the input, an exit code, and nothing
half-written (no run folder, no staging leftovers, the users database untouched).

Each case arranges a scene (configuration sections, environment, users database, sandbox),
runs the real CLI in-process through CliRunner, and checks the same guarantees.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from reconcile.errors import EXIT_CONFIG, EXIT_STRIPE, EXIT_USERDB
from tests.reliability.helpers import (
    base_sections,
    env_for,
    error_lines,
    files_under,
    invoke,
    render_toml,
    sha256_of,
)
from tests.seeded import SeededWorld

LIVE_KEY = "sk_live_" + "WrongModeKey000000live"
REVOKED_KEY = "sk_test_" + "Revoked0000000000wxyz"


@dataclass
class Scene:
    world: SeededWorld
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    sections: dict[str, dict[str, Any]]
    env: dict[str, str | None]
    config_path: Path
    config_bytes: bytes | None = None  # written as is instead of `sections`
    extra_args: list[str] = field(default_factory=list)

    @property
    def users_db(self) -> Path:
        return self.tmp_path / "users.db"

    def users_engine(self) -> sa.Engine:
        return sa.create_engine(f"sqlite:///{self.users_db}")


Arrange = Callable[[Scene], None]


@dataclass(frozen=True)
class Case:
    id: str
    code: int
    expected: str  # a distinctive part of the one error line
    arrange: Arrange
    command: tuple[str, ...] = ("run", "reconcile")


def setting(section: str, **values: Any) -> Arrange:
    def arrange(scene: Scene) -> None:
        scene.sections.setdefault(section, {}).update(values)

    return arrange


def raw_config(text: bytes) -> Arrange:
    def arrange(scene: Scene) -> None:
        scene.config_bytes = text

    return arrange


def env(**values: str | None) -> Arrange:
    def arrange(scene: Scene) -> None:
        scene.env.update(values)

    return arrange


def key_file(content: str | None) -> Arrange:
    def arrange(scene: Scene) -> None:
        path = scene.tmp_path / "stripe-key"
        if content is not None:
            path.write_text(content)
        scene.env.update(STRIPE_SECRET_KEY=None, STRIPE_SECRET_KEY_FILE=str(path))

    return arrange


def key_file_bytes(content: bytes) -> Arrange:
    def arrange(scene: Scene) -> None:
        path = scene.tmp_path / "stripe-key"
        path.write_bytes(content)
        scene.env.update(STRIPE_SECRET_KEY=None, STRIPE_SECRET_KEY_FILE=str(path))

    return arrange


def both(*steps: Arrange) -> Arrange:
    def arrange(scene: Scene) -> None:
        for step in steps:
            step(scene)

    return arrange


def missing_config(scene: Scene) -> None:
    scene.config_path = scene.tmp_path / "nowhere" / "config.toml"


def config_is_a_folder(scene: Scene) -> None:
    scene.config_path = scene.tmp_path


def revoked_key(scene: Scene) -> None:
    scene.world.sandbox.state.revoked_keys.add(REVOKED_KEY)
    scene.env["STRIPE_SECRET_KEY"] = REVOKED_KEY


def stripe_keeps_failing(scene: Scene) -> None:
    scene.world.sandbox.faults.error_rate = 1.0


def people_table(ids: list[str | None]) -> Arrange:
    """A users table whose id column has no constraint, so nulls and repeats are possible."""

    def arrange(scene: Scene) -> None:
        engine = scene.users_engine()
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "create table people (id text, email text, name text, plan text, "
                    "stripe_customer_id text, deleted_at text)"
                )
            )
            for number, user_id in enumerate(ids):
                conn.execute(
                    sa.text("insert into people (id, email) values (:id, :email)"),
                    {"id": user_id, "email": f"p{number}@example.com"},
                )
        engine.dispose()
        scene.sections["userdb"]["table"] = "people"

    return arrange


def not_a_database(scene: Scene) -> None:
    path = scene.tmp_path / "notes.txt"
    path.write_text("this is not a database, " * 200)
    scene.sections["userdb"]["url"] = f"sqlite:///{path}"


def out_below_a_file(scene: Scene) -> None:
    # Root ignores permission bits, so the unwritable folder is a path through a regular
    # file: mkdir fails with ENOTDIR whoever runs it.
    blocker = scene.tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    scene.sections["reports"]["out"] = str(blocker / "out")


def out_is_a_file(scene: Scene) -> None:
    blocker = scene.tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    scene.extra_args += ["--out", str(blocker)]


def disk_fills_up(scene: Scene) -> None:
    from reports import tables

    written: list[int] = []

    def write_then_fail(table: Any, handle: Any) -> None:
        if written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        tables.write_csv(table, handle)
        written.append(1)

    scene.monkeypatch.setattr("reports.writer.write_csv", write_then_fail)


def state_db_below_a_file(scene: Scene) -> None:
    blocker = scene.tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    scene.sections["state"]["url"] = f"sqlite:///{blocker / 'state.db'}"


CASES: list[Case] = [
    # --- configuration -----------------------------------------------------------------
    Case("config-missing-file", EXIT_CONFIG, "not found: pass an existing file", missing_config),
    Case("config-is-a-folder", EXIT_CONFIG, "is a directory", config_is_a_folder),
    Case("config-malformed-toml", EXIT_CONFIG, "is not valid TOML", raw_config(b"[userdb\nx=1\n")),
    Case("config-not-utf8", EXIT_CONFIG, "cannot be read", raw_config(b"[userdb]\nurl = \"\xff\xfe\"\n")),
    Case("config-unknown-key", EXIT_CONFIG, "[userdb] tabel: unknown setting", setting("userdb", tabel="users")),
    Case("config-unknown-section", EXIT_CONFIG, "[stripes]: unknown setting", setting("stripes", api_base="x")),
    Case("config-wrong-type", EXIT_CONFIG, "[userdb] chunk_size", setting("userdb", chunk_size="many")),
    Case("config-wrong-type-list", EXIT_CONFIG, "[reports] formats", setting("reports", formats="csv")),
    Case("config-rate-above-mode-limit", EXIT_CONFIG, "above Stripe's test-mode limit of 25/s", setting("stripe", max_requests_per_second=40)),
    Case("config-holds-a-key", EXIT_CONFIG, "holds a Stripe key", setting("stripe", secret_key="sk_test_" + "x" * 24)),
    Case("config-api-base-not-a-url", EXIT_CONFIG, "must be an http:// or https:// URL", both(setting("stripe", api_base="localhost:12111"), env(STRIPE_API_BASE=None))),
    Case("config-no-report-format", EXIT_CONFIG, "[reports] formats", setting("reports", formats=[])),
    Case("config-metadata-key-with-brackets", EXIT_CONFIG, "breaks Stripe's rules", setting("userdb", metadata={"plan[0]": "plan"})),
    Case("config-column-not-an-identifier", EXIT_CONFIG, "[userdb] email_column", setting("userdb", email_column="email; drop table users")),
    Case("config-state-url-unusable", EXIT_CONFIG, "[state] url", setting("state", url="nope://")),
    Case("config-state-db-below-a-file", EXIT_CONFIG, "state database cannot be opened", state_db_below_a_file),
    # --- key -----------------------------------------------------------------------------
    Case("key-absent", EXIT_CONFIG, "no Stripe key", env(STRIPE_SECRET_KEY=None)),
    Case("key-empty", EXIT_CONFIG, "STRIPE_SECRET_KEY is empty", env(STRIPE_SECRET_KEY="")),
    Case("key-malformed", EXIT_CONFIG, "STRIPE_SECRET_KEY is malformed", env(STRIPE_SECRET_KEY="sk_test_short!")),
    Case("key-publishable", EXIT_CONFIG, "is a publishable key (pk_test_...", env(STRIPE_SECRET_KEY="pk_test_" + "P" * 24)),
    Case("key-set-twice", EXIT_CONFIG, "keep only one", both(key_file("sk_test_" + "F" * 24), env(STRIPE_SECRET_KEY="sk_test_" + "E" * 24))),
    Case("key-file-missing", EXIT_CONFIG, "cannot be read", key_file(None)),
    Case("key-file-empty", EXIT_CONFIG, "is empty: put the key in it", key_file("\n")),
    Case("key-file-not-text", EXIT_CONFIG, "is not a text file: it must hold the key", key_file_bytes(b"\xff\xfesk_test_")),
    Case("key-of-the-other-mode", EXIT_CONFIG, "is of the wrong mode; set STRIPE_SECRET_KEY to a test-mode key", env(STRIPE_SECRET_KEY=LIVE_KEY)),
    Case("key-revoked-401", EXIT_STRIPE, "Stripe refused the key sk_test_...wxyz (401", revoked_key),
    Case("check-key-revoked-401", EXIT_STRIPE, "", revoked_key, ("check",)),
    # --- Stripe itself ---------------------------------------------------------------------
    Case("stripe-unreachable", EXIT_STRIPE, "Could not reach the Stripe API at http://127.0.0.1:9", env(STRIPE_API_BASE="http://127.0.0.1:9")),
    Case("stripe-5xx-beyond-the-retry-budget", EXIT_STRIPE, "after 3 retries", stripe_keeps_failing),
    # --- user database -------------------------------------------------------------------
    Case("userdb-unreachable-server", EXIT_USERDB, "cannot read the user database postgresql+psycopg://nobody:***@127.0.0.1:9/users", setting("userdb", url="postgresql+psycopg://nobody:secret@127.0.0.1:9/users")),
    Case("userdb-sqlite-folder-missing", EXIT_USERDB, "the user database file /nonexistent/dir/users.db does not exist", setting("userdb", url="sqlite:////nonexistent/dir/users.db")),
    Case("userdb-url-unusable", EXIT_USERDB, "is not a usable SQLAlchemy URL", setting("userdb", url="users.db")),
    Case("userdb-not-a-database", EXIT_USERDB, "cannot read the user database", not_a_database),
    Case("userdb-missing-table", EXIT_USERDB, "[userdb] table 'members' not found", setting("userdb", table="members")),
    Case("userdb-missing-column", EXIT_USERDB, "column 'mail' ([userdb] email_column) not found", setting("userdb", email_column="mail")),
    Case("userdb-missing-metadata-column", EXIT_USERDB, "column 'tier' ([userdb.metadata] tier) not found", setting("userdb", metadata={"tier": "tier"})),
    Case("userdb-null-ids", EXIT_USERDB, "2 row(s) of table 'people' have no 'id'", people_table(["u1", None, "u3", None])),
    Case("userdb-blank-ids", EXIT_USERDB, "1 row(s) of table 'people' have no 'id'", people_table(["u1", "   "])),
    Case("userdb-duplicate-ids", EXIT_USERDB, "1 duplicate value(s) in 'id'", people_table(["u1", "u2", "u1"])),
    # --- environment -----------------------------------------------------------------------
    Case("out-below-a-regular-file", EXIT_CONFIG, "Not a directory", out_below_a_file),
    Case("out-is-a-regular-file", EXIT_CONFIG, "is a file", out_is_a_file),
    Case("disk-full-while-writing", EXIT_CONFIG, "the disk is full", disk_fills_up),
    Case("fail-on-unknown-severity", EXIT_CONFIG, "Invalid value for '--fail-on'", lambda scene: scene.extra_args.extend(["--fail-on", "fatal"])),
    # --- wrong types, out-of-range values and bad URLs: exit 2 at load (some were 70) ---
    Case("config-number-as-a-string", EXIT_CONFIG, '[stripe] max_retries: expected a whole number, got the string "5"', setting("stripe", max_retries="5")),
    Case("config-boolean-as-a-string", EXIT_CONFIG, '[email] include_personal_data: expected true or false, got the string "no"', setting("email", include_personal_data="no")),
    Case("config-not-a-number", EXIT_CONFIG, "[stripe] retry_initial_delay: expected a finite number", setting("stripe", retry_initial_delay=float("nan"))),
    Case("config-api-base-broken-ipv6", EXIT_CONFIG, "[stripe] api_base: must be an http:// or https:// URL", both(setting("stripe", api_base="http://[::1"), env(STRIPE_API_BASE=None))),
    Case("config-api-base-bad-port", EXIT_CONFIG, "[stripe] api_base: must be an http:// or https:// URL", both(setting("stripe", api_base="http://127.0.0.1:port"), env(STRIPE_API_BASE=None))),
    Case("config-api-base-with-v1", EXIT_CONFIG, "[stripe] api_base: leave out the /v1 at its end", both(setting("stripe", api_base="http://127.0.0.1:12111/v1/"), env(STRIPE_API_BASE=None))),
    Case("config-api-base-with-password", EXIT_CONFIG, "[stripe] api_base: must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:12111 and no user or password in it", both(setting("stripe", api_base="http://ops:hunter2@127.0.0.1:12111"), env(STRIPE_API_BASE=None))),
    Case("env-api-base-broken-ipv6", EXIT_CONFIG, "STRIPE_API_BASE: must be an http:// or https:// URL", env(STRIPE_API_BASE="http://[::1")),
    Case("config-timeout-zero", EXIT_CONFIG, "[stripe] timeout_seconds: must be more than 0", setting("stripe", timeout_seconds=0)),
    Case("config-chunk-size-huge", EXIT_CONFIG, "[userdb] chunk_size: must be 10000000 or less", setting("userdb", chunk_size=9_999_999_999_999_999)),
    Case("config-resume-age-huge", EXIT_CONFIG, "[resume] max_age_hours: must be 8784 or less", setting("resume", auto=True, max_age_hours=1e300)),
    Case("config-misfire-grace-huge", EXIT_CONFIG, "[schedule] misfire_grace_seconds: must be 2678400 or less", setting("schedule", misfire_grace_seconds=99_999_999_999_999_999)),
    Case("config-sender-two-addresses", EXIT_CONFIG, "[email] from: '[email], [email]' is not one email address: set a single address", setting("email", **{"from": "ops@example.com, x@evil.example"})),
    Case("config-pushgateway-not-a-url", EXIT_CONFIG, "[metrics] pushgateway_url: must be an http:// or https:// URL", setting("metrics", pushgateway_url="http://[::1")),
    Case("config-bad-timezone", EXIT_CONFIG, "[schedule] timezone: unknown time zone 'Mars/Olympus'", setting("schedule", timezone="Mars/Olympus")),
    Case("schedule-bad-cron", EXIT_CONFIG, "[schedule.jobs.reconcile] cron: cron expression '61 3 * * *': minute field", setting("schedule.jobs.reconcile", cron="61 3 * * *")),
    Case("schedule-enabled-as-a-string", EXIT_CONFIG, '[schedule.jobs.reconcile] enabled: expected true or false, got the string "no"', setting("schedule.jobs.reconcile", cron="17 3 * * *", enabled="no")),
    Case("schedule-unknown-job", EXIT_CONFIG, "[schedule.jobs.reconcil]: no job is called 'reconcil'", setting("schedule.jobs.reconcil", cron="17 3 * * *")),
    Case("schedule-option-string-boolean", EXIT_CONFIG, '[schedule.jobs.sync-metadata] options.apply: expected true or false, got the string "false"', setting("schedule.jobs.sync-metadata", cron="17 3 * * *", options={"apply": "false"})),
    Case("schedule-option-string-boolean-schedule", EXIT_CONFIG, '[schedule.jobs.sync-metadata] options.apply: expected true or false, got the string "false"', setting("schedule.jobs.sync-metadata", cron="17 3 * * *", options={"apply": "false"}), ("schedule",)),
    Case("schedule-option-string-boolean-check", EXIT_CONFIG, '[schedule.jobs.sync-metadata] options.apply: expected true or false, got the string "false"', setting("schedule.jobs.sync-metadata", cron="17 3 * * *", options={"apply": "false"}), ("check",)),
    Case("schedule-confirm-live-as-a-string", EXIT_CONFIG, '[schedule.jobs.dedupe] options.apply: expected true or false, got the string "no" (and 1 more)', setting("schedule.jobs.dedupe", cron="17 3 * * *", options={"apply": "no", "confirm_live": "no"})),
    Case("schedule-option-unknown", EXIT_CONFIG, "[schedule.jobs.link-users] options.create: unknown option; link-users takes apply", setting("schedule.jobs.link-users", cron="17 3 * * *", options={"create": True})),
    Case("schedule-option-number-as-a-string", EXIT_CONFIG, '[schedule.jobs.dedupe] options.max_changes: expected a whole number, got the string "5"', setting("schedule.jobs.dedupe", cron="17 3 * * *", options={"max_changes": "5"})),
    Case("schedule-option-negative", EXIT_CONFIG, "[schedule.jobs.dedupe] options.max_changes: must be 0 or more, got the number -3", setting("schedule.jobs.dedupe", cron="17 3 * * *", options={"max_changes": -3})),
    Case("schedule-option-days-out-of-range", EXIT_CONFIG, "[schedule.jobs.card-expiry] options.days: must be 3650 or less", setting("schedule.jobs.card-expiry", cron="17 3 * * *", options={"days": 9999})),
    Case("schedule-fail-on-twice", EXIT_CONFIG, "[schedule.jobs.reconcile]: fail_on = \"error\" and options.fail_on = \"info\" disagree", setting("schedule.jobs.reconcile", cron="17 3 * * *", fail_on="error", options={"fail_on": "info"})),
    Case("runs-of-an-unknown-job", EXIT_CONFIG, "--job reconcil: no job is called 'reconcil'", lambda scene: None, ("runs", "--job", "reconcil")),
    # --- a live key never travels over plain http off this machine ---------------------
    Case("live-key-over-plain-http", EXIT_CONFIG, "STRIPE_API_BASE http://10.1.2.3 is plain http to another machine", env(STRIPE_SECRET_KEY=LIVE_KEY, STRIPE_API_BASE="http://10.1.2.3")),
    Case("live-key-over-plain-http-config", EXIT_CONFIG, "[stripe] api_base http://stripe-proxy.internal:8080 is plain http to another machine", both(setting("stripe", api_base="http://stripe-proxy.internal:8080"), env(STRIPE_SECRET_KEY=LIVE_KEY, STRIPE_API_BASE=None))),
    Case("live-key-over-plain-http-check", EXIT_CONFIG, "STRIPE_API_BASE http://10.1.2.3 is plain http", env(STRIPE_SECRET_KEY=LIVE_KEY, STRIPE_API_BASE="http://10.1.2.3"), ("check",)),
    # --- live confirmation: one parser ----------------------------------------------------
    Case("confirm-live-variable-malformed", EXIT_CONFIG, "STRIPE_RECONCILE_CONFIRM_LIVE='maybe' is neither yes nor no", env(STRIPE_RECONCILE_CONFIRM_LIVE="maybe"), ("run", "sync-metadata", "--apply")),
    Case("confirm-live-variable-malformed-send", EXIT_CONFIG, "STRIPE_RECONCILE_CONFIRM_LIVE='on' is neither yes nor no", env(STRIPE_RECONCILE_CONFIRM_LIVE="on"), ("run", "card-expiry", "--send")),
    Case("confirm-live-variable-malformed-check", EXIT_CONFIG, "STRIPE_RECONCILE_CONFIRM_LIVE='maybe' is neither yes nor no", env(STRIPE_RECONCILE_CONFIRM_LIVE="maybe"), ("check",)),
]  # fmt: skip


def test_the_corpus_is_large_and_distinct() -> None:
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)


def _in_work_folder(path: Path) -> bool:
    return any(part.startswith(".work-") for part in path.parts)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_an_exit_code_and_nothing_half_written(
    case: Case, small_world: SeededWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    scene = Scene(
        world=small_world,
        tmp_path=tmp_path,
        monkeypatch=monkeypatch,
        sections=base_sections(small_world, out),
        env=env_for(small_world),
        config_path=tmp_path / "config.toml",
    )
    case.arrange(scene)
    if scene.config_path == tmp_path / "config.toml":
        scene.config_path.write_bytes(
            scene.config_bytes
            if scene.config_bytes is not None
            else render_toml(scene.sections).encode()
        )
    users_before = sha256_of(scene.users_db)

    result = invoke(
        [*case.command, "--config", str(scene.config_path), *scene.extra_args], scene.env
    )

    shown = result.output + result.stderr
    assert "Traceback" not in shown
    assert result.exit_code == case.code, shown
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    if case.command == ("check",) and fails:
        # check reports every problem it reaches on stdout, one FAIL line each (a
        # configuration it cannot load is one error line, as for any command).
        assert any(case.expected in line for line in fails), result.stdout
    else:
        lines = error_lines(result)
        assert len(lines) == 1, result.stderr
        assert case.expected in lines[0], lines[0]
        assert len(lines[0]) < 600
    # Nothing half-written: no report folder or staging leftovers, the users DB as it was.
    # A failed run may keep its listing's work folder (`.work-<run id>`, for --resume);
    # it holds personal data, so it must be the owner's alone.
    leftovers = [p for p in files_under(out) if p.is_file() and not _in_work_folder(p)]
    assert leftovers == []
    for path in files_under(out):
        if _in_work_folder(path):
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    assert sha256_of(scene.users_db) == users_before
    assert small_world.settings.secret_key is not None
    assert small_world.settings.secret_key.get_secret_value() not in shown
