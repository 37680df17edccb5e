"""A run sends its first Stripe request before pandas is imported (issue 16).

pandas, Arrow, the reports and the mirror cost about a second to import; the listing's first
page does not need them. Neither do the libraries that only come along with others: the
Stripe SDK's async HTTP clients, structlog's rich tracebacks, the PostgreSQL dialect on a
SQLite state database. Checked in fresh interpreters, where nothing is imported yet.
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
# Modules a run never needs on its way to the first request, which libraries would bring
# along: aiohttp and httpx (the SDK's optional async clients, reconcile.stripe_api), rich
# and pygments (structlog's optional tracebacks, reconcile.logs), the PostgreSQL dialect
# with a SQLite state URL (reconcile.state.store), SQLAlchemy's ORM.
ALONG = (
    "aiohttp",
    "httpx",
    "rich",
    "pygments",
    "sqlalchemy.dialects.postgresql",
    "sqlalchemy.orm",
)


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
        f"print(json.dumps([m for m in {HEAVY + ALONG!r} if m in sys.modules]))\n"
    )
    done = _fresh(code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_the_stripe_sdk_is_imported_without_its_async_clients() -> None:
    # Its sync client and everything the gateway uses are there; aiohttp (installed with
    # the sandbox extra, so the probe would find it) can still be imported afterwards.
    code = (
        "import sys, json, importlib.util\n"
        "import reconcile.stripe_api.gateway\n"
        "import stripe\n"
        "before = [m for m in ('aiohttp', 'httpx') if m in sys.modules]\n"
        "found = importlib.util.find_spec('aiohttp') is not None\n"
        "import aiohttp\n"
        "print(json.dumps({'before': before, 'found': found,\n"
        "  'client': stripe.RequestsClient.__name__, 'after': aiohttp.__name__}))\n"
    )
    done = _fresh(code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "before": [],
        "found": True,
        "client": "RequestsClient",
        "after": "aiohttp",
    }


def test_logging_works_without_rich_and_rich_still_imports() -> None:
    # A console line with an exception renders as plain text, and the progress bar's rich
    # is importable once logging is set up.
    code = (
        "import io, sys, json\n"
        "from reconcile.logs import configure_logging, get_logger\n"
        "out = io.StringIO()\n"
        "configure_logging('info', stream=out, log_format='console')\n"
        "try:\n"
        "    raise ValueError('boom sk_test_abcdefghijklmnop')\n"
        "except ValueError:\n"
        "    get_logger('t').exception('failed')\n"
        "before = 'rich' in sys.modules\n"
        "import rich.console\n"
        "print(json.dumps({'before': before, 'log': out.getvalue()}))\n"
    )
    done = _fresh(code)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["before"] is False
    assert "failed" in outcome["log"]
    assert "Traceback (most recent call last)" in outcome["log"]
    assert "ValueError: boom" in outcome["log"]
    assert "abcdefghijklmnop" not in outcome["log"]


# Runs the CLI in this interpreter, noting when pandas and the ALONG modules are first
# imported.
_RUN_JOB = """
import json, sys, time

class Watch:
    seen = None
    along = {}

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" and Watch.seen is None:
            Watch.seen = time.time()
        if name in ALONG:
            Watch.along.setdefault(name, time.time())
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
print(json.dumps({"exit": code, "pandas_at": Watch.seen, "along_at": Watch.along}))
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
    done = _fresh(f"ARGS = {args!r}\nALONG = {ALONG!r}\n" + _RUN_JOB, env)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["exit"] in (0, None), done.stderr[-2000:]
    requests = world.sandbox.request_log.entries()
    assert any(r.path == "/v1/customers" for r in requests)
    assert outcome["pandas_at"] is not None  # the compare needs it: the watch works
    first_request_at = min(r.time for r in requests)
    assert (first_request_at < outcome["pandas_at"]) is listing_first
    early = {name: at for name, at in outcome["along_at"].items() if at <= first_request_at}
    assert early == {}
