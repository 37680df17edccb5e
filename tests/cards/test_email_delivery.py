"""Emailed reports and card reminders through a real in-process SMTP server (aiosmtpd)."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from jobs.commands.cli import cli
from jobs.delivery import after_run_hooks
from jobs.runner import RunOutcome
from reconcile.errors import ConfigError, DeliveryError
from reconcile.settings import CardExpirySettings, EmailSettings
from tests.cards.conftest import SmtpServer, free_port
from tests.cards.helpers import SEEDED_NOW, run_card_expiry, with_email
from tests.seeded import TEST_KEY, SeededWorld


def attachments(message: object) -> dict[str, bytes]:
    return {
        part.get_filename(): part.get_payload(decode=True)  # type: ignore[attr-defined]
        for part in message.iter_attachments()  # type: ignore[attr-defined]
    }


def test_report_email_has_recipients_subject_bodies_and_the_csvs(
    world: SeededWorld, smtp_server: SmtpServer
) -> None:
    settings = with_email(world.settings, smtp_server.host, smtp_server.port)
    outcome = run_card_expiry(world, settings, after_run=after_run_hooks(settings, None))
    assert outcome.exit_code == 0
    (mail,) = smtp_server.received
    assert mail.rcpt_tos == ["ops@example.com", "finance@example.com"]
    assert mail.mail_from == "reports@example.com"
    message = mail.message
    assert message["Subject"] == (
        f"[stripe-reconcile] card-expiry succeeded: {len(outcome.findings)} finding(s), "
        f"test mode, run {outcome.run_id}"
    )
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert f"card-expiry run {outcome.run_id} (test mode)" in text
    assert "card_expired" in text
    assert str(outcome.run_dir) in text
    assert "<html" in html
    assert outcome.run_id in html
    files = attachments(message)
    on_disk = sorted(p.name for p in outcome.run_dir.glob("*.csv"))
    assert sorted(files) == on_disk
    assert "reminders.csv" in files
    assert "findings.csv" in files
    assert files["findings.csv"] == (outcome.run_dir / "findings.csv").read_bytes()


def test_above_the_size_the_csvs_go_in_one_zip(world: SeededWorld, smtp_server: SmtpServer) -> None:
    settings = with_email(world.settings, smtp_server.host, smtp_server.port, zip_above_bytes=100)
    outcome = run_card_expiry(world, settings, after_run=after_run_hooks(settings, True))
    files = attachments(smtp_server.received[0].message)
    assert list(files) == [f"card-expiry-{outcome.run_id}.zip"]
    with zipfile.ZipFile(io.BytesIO(files[f"card-expiry-{outcome.run_id}.zip"])) as archive:
        assert sorted(archive.namelist()) == sorted(p.name for p in outcome.run_dir.glob("*.csv"))
        assert archive.read("findings.csv") == (outcome.run_dir / "findings.csv").read_bytes()


def test_personal_data_can_be_left_out_of_attachments(
    world: SeededWorld, smtp_server: SmtpServer
) -> None:
    settings = with_email(
        world.settings, smtp_server.host, smtp_server.port, include_personal_data=False
    )
    outcome = run_card_expiry(world, settings, after_run=after_run_hooks(settings, True))
    files = attachments(smtp_server.received[0].message)
    emails = {c["email"] for c in world.account.customers if c["email"]}
    for name, data in files.items():
        table = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        assert not {"email", "name"} & set(table.columns), name
        text = data.decode()
        assert not any(address in text for address in emails), name
    # The files on disk keep them: the setting is about recipients, not the report.
    assert "email" in pd.read_csv(outcome.run_dir / "reminders.csv").columns


def test_smtp_refusing_keeps_the_files_and_exits_7(
    world: SeededWorld, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    smtp_server.handler.refuse_data = "554 5.7.1 rejected by policy"
    settings = with_email(world.settings, smtp_server.host, smtp_server.port)
    with pytest.raises(DeliveryError) as caught:
        run_card_expiry(world, settings, after_run=after_run_hooks(settings, True))
    assert caught.value.exit_code == 7
    assert "554 5.7.1 rejected by policy" in caught.value.message
    assert "\n" not in caught.value.message
    (run_dir,) = (Path(world.settings.reports.out) / "card-expiry").iterdir()
    assert (run_dir / "findings.csv").is_file()
    assert (run_dir / "reminders.csv").is_file()


def test_cli_run_with_email_and_an_unreachable_server_exits_7_with_one_line(
    world: SeededWorld, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    out = tmp_path / "out"
    config.write_text(
        f'[userdb]\nurl = "{world.settings.userdb.url}"\nscope = {{ env = "prod" }}\n'
        f'[state]\nurl = "{world.settings.state.url}"\n[reports]\nout = "{out}"\n'
        f'[email]\nto = ["ops@example.com"]\nsmtp_host = "127.0.0.1"\n'
        f'smtp_port = {free_port()}\nsecurity = "none"\ntimeout_seconds = 5\n'
    )
    env = {"STRIPE_SECRET_KEY": TEST_KEY, "STRIPE_API_BASE": world.sandbox.url}
    result = CliRunner().invoke(cli, ["run", "reconcile", "--config", str(config)], env=env)
    assert result.exit_code == 7, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("stripe-reconcile:")]
    assert len(errors) == 1
    assert "could not connect" in errors[0]
    assert "kept in" in errors[0]
    assert next(iter((out / "reconcile").iterdir())).joinpath("findings.csv").is_file()
    # --no-email: the same configuration sends nothing and succeeds.
    quiet = CliRunner().invoke(
        cli, ["run", "reconcile", "--no-email", "--config", str(config)], env=env
    )
    assert quiet.exit_code == 0, quiet.output


def test_email_without_recipients_or_password_is_refused_before_the_run(
    world: SeededWorld,
) -> None:
    with pytest.raises(ConfigError, match=r"\[email\] to"):
        after_run_hooks(world.settings, True)
    assert after_run_hooks(world.settings, None) == []
    needs_login = world.settings.model_copy(
        update={"email": EmailSettings(to=["a@example.com"], user="reports")}
    )
    with pytest.raises(ConfigError, match="SMTP_PASSWORD"):
        after_run_hooks(needs_login, None, env={})
    assert len(after_run_hooks(needs_login, None, env={"SMTP_PASSWORD": "pw"})) == 1


# --- reminders ------------------------------------------------------------------------


def test_send_emails_each_customer_and_a_second_run_repeats_nothing(
    world: SeededWorld, smtp_server: SmtpServer
) -> None:
    settings = with_email(world.settings, smtp_server.host, smtp_server.port)
    first = run_card_expiry(world, settings, send=True)
    reminders = pd.read_csv(first.run_dir / "reminders.csv", dtype=str, keep_default_na=False)
    assert len(reminders) > 0
    assert first.exit_code == 0
    by_address = {r.rcpt_tos[0]: r for r in smtp_server.received}
    assert sorted(by_address) == sorted(set(reminders["email"]))
    assert all(len(r.rcpt_tos) == 1 for r in smtp_server.received)
    row = reminders.iloc[0]
    mail = by_address[row["email"]]
    assert mail.mail_from == "reports@example.com"
    assert mail.message["Subject"] == f"Please update your card ending in {row['last4']}"
    body = mail.message.get_body(("plain",)).get_content()
    assert row["last4"] in body
    assert row["expires_on"] in body
    assert f"Hello {row['name']}" in body
    assert first.summary["reminders"].startswith(f"sent {len(by_address)} email(s)")

    smtp_server.received.clear()
    second = run_card_expiry(world, settings, send=True, now=SEEDED_NOW + timedelta(days=1))
    assert smtp_server.received == []
    assert second.summary["reminders_due"] == 0
    assert second.summary["reminders_already_sent"] == len(reminders)
    assert pd.read_csv(second.run_dir / "reminders.csv").empty


def test_without_send_nothing_is_sent_nor_remembered(
    world: SeededWorld, smtp_server: SmtpServer
) -> None:
    settings = with_email(world.settings, smtp_server.host, smtp_server.port)
    dry = run_card_expiry(world, settings)
    assert smtp_server.received == []
    assert dry.summary["reminders"].startswith("would send")
    sent = run_card_expiry(world, settings, send=True)
    assert len(smtp_server.received) == dry.summary["reminder_emails_due"]
    assert sent.summary["reminders_due"] == dry.summary["reminders_due"]


def test_a_second_reminder_after_the_configured_interval_and_never_a_third(
    world: SeededWorld, smtp_server: SmtpServer
) -> None:
    base = with_email(world.settings, smtp_server.host, smtp_server.port)
    settings = base.model_copy(
        update={"card_expiry": CardExpirySettings(remind_again_after_days=7, days=60)}
    )
    first = run_card_expiry(world, settings, send=True)
    count = len(smtp_server.received)
    assert count > 0
    early = run_card_expiry(world, settings, send=True, now=SEEDED_NOW + timedelta(days=6))
    assert early.summary["reminders_due"] == 0
    assert len(smtp_server.received) == count
    later = run_card_expiry(world, settings, send=True, now=SEEDED_NOW + timedelta(days=7))
    # Cards that left the window in the meantime are not reminded again.
    assert 0 < later.summary["reminders_due"] <= first.summary["reminders_due"]
    third = run_card_expiry(world, settings, send=True, now=SEEDED_NOW + timedelta(days=30))

    def cards(outcome: RunOutcome) -> set[tuple[str, ...]]:
        table = pd.read_csv(outcome.run_dir / "reminders.csv", dtype=str, keep_default_na=False)
        return set(table[["customer_id", "last4", "exp_month", "exp_year"]].itertuples(index=False))

    # Only cards that entered the window since; none of the twice-reminded ones.
    assert not cards(third) & cards(first)
    assert cards(later) <= cards(first)


def test_failed_reminders_are_not_remembered_and_exit_6(
    world: SeededWorld, smtp_server: SmtpServer
) -> None:
    smtp_server.handler.refuse_data = "451 4.3.0 try again later"
    settings = with_email(world.settings, smtp_server.host, smtp_server.port)
    failed = run_card_expiry(world, settings, send=True)
    assert failed.exit_code == 6
    assert failed.result.failed_actions == failed.summary["reminder_emails_due"] > 0
    assert "451 4.3.0 try again later" in failed.summary["reminders"]
    smtp_server.handler.refuse_data = None
    retried = run_card_expiry(world, settings, send=True)
    assert retried.exit_code == 0
    assert len(smtp_server.received) == failed.summary["reminder_emails_due"]


def test_live_mode_send_needs_confirmation(
    world: SeededWorld, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.card_expiry_job import CONFIRM_LIVE_ENV, live_send_confirmed

    monkeypatch.delenv(CONFIRM_LIVE_ENV, raising=False)
    assert not live_send_confirmed({"send": True}, {})
    assert live_send_confirmed({"confirm_live": True}, {})
    assert live_send_confirmed({}, {CONFIRM_LIVE_ENV: "1"})
    live = world.settings.model_copy(
        update={"secret_key": world.settings.secret_key.__class__("sk_live_" + "L" * 24)}
    )
    live = with_email(live, smtp_server.host, smtp_server.port)
    with pytest.raises(ConfigError, match="--confirm-live"):
        run_card_expiry(world, live, send=True)
    assert smtp_server.received == []


def test_a_custom_template_and_a_broken_one(
    world: SeededWorld, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    template = tmp_path / "reminder.txt.j2"
    template.write_text("Hi {{ name or email }}: {% for c in cards %}{{ c.last4 }} {% endfor %}\n")
    settings = with_email(world.settings, smtp_server.host, smtp_server.port).model_copy(
        update={
            "card_expiry": CardExpirySettings(
                reminder_template=template, subject="Card {{ card.brand }} {{ card.last4 }}"
            )
        }
    )
    run_card_expiry(world, settings, send=True)
    mail = smtp_server.received[0].message
    assert mail.get_body(("plain",)).get_content().startswith("Hi ")
    assert mail["Subject"].startswith("Card ")
    template.write_text("Hi {{ nmae }}\n")
    with pytest.raises(ConfigError, match="reminder_template"):
        run_card_expiry(world, settings, send=True)
    missing = settings.model_copy(
        update={"card_expiry": CardExpirySettings(reminder_template=tmp_path / "nope.j2")}
    )
    with pytest.raises(ConfigError, match="cannot be read"):
        run_card_expiry(world, missing)


def test_cli_run_card_expiry_sends_and_prints_the_reminder_line(
    world: SeededWorld, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[userdb]\nurl = "{world.settings.userdb.url}"\nscope = {{ env = "prod" }}\n'
        f'[state]\nurl = "{world.settings.state.url}"\n[reports]\nout = "{tmp_path / "out"}"\n'
        f'[email]\nfrom = "billing@example.com"\nsmtp_host = "{smtp_server.host}"\n'
        f'smtp_port = {smtp_server.port}\nsecurity = "none"\n[card_expiry]\ndays = 45\n'
    )
    env = {"STRIPE_SECRET_KEY": TEST_KEY, "STRIPE_API_BASE": world.sandbox.url}
    args = ["run", "card-expiry", "--send", "--config", str(config)]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    run_dir = Path(lines[-1])
    assert lines[-2].startswith(f"  reminders: sent {len(smtp_server.received)} email(s)")
    assert len(smtp_server.received) > 0
    assert {r.mail_from for r in smtp_server.received} == {"billing@example.com"}
    reminders = pd.read_csv(run_dir / "reminders.csv")
    assert len(set(reminders["email"])) == len(smtp_server.received)
    summary = (run_dir / "summary.json").read_text()
    assert '"window_days": 45' in summary
    again = CliRunner().invoke(cli, args, env=env)
    assert "reminders: sent 0: none due" in again.stdout
    assert len(smtp_server.received) == len(set(reminders["email"]))
