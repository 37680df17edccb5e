"""No email, name, phone number or key reaches the logs; every event of a run names it."""

from __future__ import annotations

import io
import json

from jobs.registry import JOBS
from jobs.runner import execute_job
from reconcile.errors import ReconcileError
from reconcile.logs import configure_logging, get_logger, redact, redact_text
from tests.seeded import TEST_KEY, SeededWorld


def test_running_every_job_on_seeded_data_logs_no_personal_data(world: SeededWorld) -> None:
    stream = io.StringIO()  # not a terminal: JSON lines, as under cron
    configure_logging("debug", stream=stream)
    failures: dict[str, str] = {}
    try:
        for name, job in JOBS.items():
            try:
                execute_job(job, world.settings)  # dry runs: nothing is written
            except ReconcileError as exc:
                failures[name] = exc.message
        # And whatever a caller passes, the processor cleans it.
        get_logger("test").warning(
            "careless caller",
            note=f"{world.account.users[0]['email']} called from +15551234567 with {TEST_KEY}",
            customer_email=world.account.users[1]["email"],
            name=world.account.users[2]["name"],
        )
    finally:
        configure_logging("info")
    assert "reconcile" not in failures, failures
    output = stream.getvalue()
    lines = output.splitlines()
    assert len(lines) > 10
    secrets = {TEST_KEY}
    for record in [*world.account.users, *world.account.customers]:
        for field in ("email", "name", "phone"):
            value = record.get(field)
            if isinstance(value, str) and len(value.strip()) >= 5:
                secrets.add(value.strip())
    assert len(secrets) > 100
    leaked = sorted(s for s in secrets if s in output or s.lower() in output.lower())
    assert leaked == [], f"{len(leaked)} personal values in the logs, e.g. {leaked[:3]}"
    events = [json.loads(line) for line in lines]
    in_runs = [e for e in events if e["event"] != "careless caller"]
    assert in_runs
    unbound = [e for e in in_runs if "run_id" not in e or "job" not in e]
    assert unbound == []


def test_redaction_covers_phone_numbers_and_personal_field_names() -> None:
    event = redact(
        None,
        "info",
        {
            "event": "call +44 20 7946 0958 or (555) 123-4567 about ada@example.com",
            "user_phone": "+15551234567",
            "rows": [{"name": "Ada Lovelace", "id": "u1"}],
            "when": "2026-11-21T03:17:00Z",
            "run_id": "20261121T031700Z-4c1f0a",
        },
    )
    assert event["event"] == "call [phone] or [phone] about [email]"
    assert event["user_phone"] == "[redacted]"
    assert event["rows"] == [{"name": "[redacted]", "id": "u1"}]
    assert event["when"] == "2026-11-21T03:17:00Z"
    assert event["run_id"] == "20261121T031700Z-4c1f0a"
    assert redact_text(f"key {TEST_KEY}") == f"key sk_test_...{TEST_KEY[-4:]}"
