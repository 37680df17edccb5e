"""A run sends its first Stripe request before pandas is imported (issue 16).

pandas, Arrow, the reports and the mirror cost about a second to import; the listing's first
page does not need them. Checked in fresh interpreters, where nothing is imported yet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.seeded import TEST_KEY, SeededWorld

# Modules a run does not need before its first request.
HEAVY = ("pandas", "pyarrow", "jinja2", "prometheus_client")


def _fresh(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[2],
        timeout=120,
        check=False,
    )


def test_the_run_chain_imports_nothing_heavy() -> None:
    # What `run reconcile` / `run card-expiry` import before their job starts.
    code = (
        "import sys, json\n"
        "import jobs.options, jobs.runner, jobs.base, jobs.reconcile_job, reconcile.userdb\n"
        "import jobs.card_expiry_job, jobs.reminders, jobs.listing_run\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = _fresh(code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


# Runs the CLI in this interpreter, noting when pandas is first imported.
_RUN_JOB = """
import json, sys, time

class Watch:
    seen = None

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" and Watch.seen is None:
            Watch.seen = time.time()
        return None

sys.meta_path.insert(0, Watch())
from jobs.commands.cli import main
sys.argv = ["stripe-reconcile", "run", *ARGS]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"exit": code, "pandas_at": Watch.seen}))
"""


@pytest.mark.parametrize(
    ("args", "listing_first"),
    [
        (["reconcile"], True),
        (["card-expiry"], True),
        # Each page is judged against the users as it arrives: they are read first.
        (["card-expiry", "--all-cards"], False),
    ],
)
def test_the_first_request_leaves_before_pandas_is_imported(
    world: SeededWorld, tmp_path: Path, args: list[str], listing_first: bool
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        "[userdb]\n"
        f'url = "{world.users_url}"\n'
        'scope = { env = "prod" }\n'
        "[state]\n"
        f'url = "sqlite:///{tmp_path / "state.db"}"\n'
        "[reports]\n"
        f'out = "{tmp_path / "output"}"\n'
    )
    env = {
        **os.environ,
        "STRIPE_SECRET_KEY": TEST_KEY,
        "STRIPE_API_BASE": world.sandbox.url,
        "STRIPE_RECONCILE_CONFIG": str(config),
    }
    done = _fresh(f"ARGS = {args!r}\n" + _RUN_JOB, env)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["exit"] in (0, None), done.stderr[-2000:]
    requests = world.sandbox.request_log.entries()
    assert any(r.path == "/v1/customers" for r in requests)
    assert outcome["pandas_at"] is not None  # the compare needs it: the watch works
    assert (min(r.time for r in requests) < outcome["pandas_at"]) is listing_first
