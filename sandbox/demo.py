"""`stripe-reconcile demo`: a first look, offline, in under a minute.

Starts the sandbox in-process, seeds a test-mode account with planted anomalies and a
matching SQLite users database, runs every read-only job against them and says how
many of the planted anomalies each job found.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

from jobs.registry import JOBS, READ_ONLY_JOBS
from jobs.runner import execute_job
from jobs.summary import format_summary
from reconcile.rules.findings import CUSTOMER_KINDS
from reconcile.settings import StateSettings, load_settings
from sandbox.cardtruth import score_seeded_run
from sandbox.groundtruth import score_findings

__all__ = ["DEMO_SCOPE", "run_demo"]

DEMO_SCOPE = {"env": "prod"}


def run_demo(*, customers: int, seed: int, out_dir: Path, echo: Callable[[str], None]) -> None:
    from sandbox.loading import load_into_sandbox
    from sandbox.runner import SandboxConfig, SandboxServer
    from sandbox.seed import generate_account, write_ground_truth, write_users_db

    data_dir = out_dir / "demo-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("users.db", "state.db"):
        (data_dir / stale).unlink(missing_ok=True)
    account = generate_account(customers, seed=seed)
    users_db = data_dir / "users.db"
    write_users_db(account, str(users_db))
    write_ground_truth(account, data_dir / "ground-truth.json")

    with SandboxServer(SandboxConfig()) as sandbox:
        load_into_sandbox(sandbox.store, account)
        echo(
            f"sandbox at {sandbox.url}: {len(account.customers)} test-mode customers, "
            f"{len(account.users)} users in {users_db}"
        )
        base = load_settings(
            None,
            env={
                # A throwaway key: the sandbox accepts any well-formed test key.
                "STRIPE_SECRET_KEY": "sk_test_demo" + secrets.token_hex(12),
                "STRIPE_API_BASE": sandbox.url,
            },
        )
        settings = base.model_copy(
            update={
                "userdb": base.userdb.model_copy(
                    update={"url": f"sqlite:///{users_db}", "scope": DEMO_SCOPE}
                ),
                "state": StateSettings(url=f"sqlite:///{data_dir / 'state.db'}"),
                "reports": base.reports.model_copy(update={"out": out_dir}),
            }
        )
        for name in READ_ONLY_JOBS:
            outcome = execute_job(JOBS[name], settings, out_dir=out_dir)
            echo("")
            echo(format_summary(outcome.summary))
            if name == "reconcile":
                score = score_findings(outcome.findings, account.ground_truth, CUSTOMER_KINDS)
                echo(
                    f"  planted anomalies found: {score.expected - len(score.missed)} of "
                    f"{score.expected} (recall {score.recall:.0%}, precision {score.precision:.0%})"
                )
            elif name == "card-expiry":
                cards = score_seeded_run(outcome.findings, account)
                echo(
                    f"  planted expired/expiring default cards found: "
                    f"{cards.expected - len(cards.missed)} of {cards.expected} (recall "
                    f"{cards.recall:.0%}, precision {cards.precision:.0%}); "
                    f"reminders: {outcome.summary.get('reminders', '')}"
                )
            echo(f"  reports: {outcome.run_dir}")
