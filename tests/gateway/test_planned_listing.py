"""A listing cut where the account's last one says its windows end on full pages (issue 16):
the pure plan, the sandbox paged by it, and the reconcile job keeping and using the shape."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs.card_expiry_job import JOB as CARD_EXPIRY
from jobs.reconcile_job import JOB as RECONCILE
from jobs.runner import execute_job
from reconcile.listing.checkpoints import CheckpointStore
from reconcile.listing.walk import list_windows, merge_records, window_bounds
from reconcile.rules.listing_plan import (
    PAGE,
    ListingProfile,
    oldest_customer,
    planned_windows,
    profile_of,
)
from reconcile.state.store import StateStore
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter import RequestLimiter
from reconcile.stripe_api.pager import iter_customers
from sandbox.loading import load_into_sandbox
from sandbox.runner import SandboxServer
from sandbox.seed import generate_account
from tests.seeded import TEST_KEY, SeededWorld

KEY = "sk_test_" + "PlannedListing0123456"
NOW = 1_790_000_000
TIE = NOW - 40 * 86_400  # 250 customers share this second


def _window_counts(created: list[int], windows: list[tuple[int | None, int]]) -> list[int]:
    return [sum(1 for c in created if (gte is None or c >= gte) and c < lt) for gte, lt in windows]


# The plan ------------------------------------------------------------------------------


def test_every_window_but_the_newest_holds_whole_pages() -> None:
    created = [NOW - 10 * n for n in range(1, 2_351)]  # 2,350 customers, one per 10 s
    profile = profile_of(created, NOW)
    assert profile.customers == 2_350
    assert oldest_customer(profile) == min(created)
    windows = planned_windows(profile, NOW + 60, 6)
    assert windows[0][1] == NOW + 60
    assert windows[-1][0] is None
    assert all(a[0] == b[1] for a, b in itertools.pairwise(windows))
    counts = _window_counts(created, windows)
    assert sum(counts) == len(created)
    assert all(n % PAGE == 0 for n in counts[1:])
    # Four pages a window (24 pages over 6), the rest in the newest.
    assert counts[1:] == [400] * (len(counts) - 1)
    pages = sum(math.ceil(n / PAGE) for n in counts)
    assert pages == math.ceil(len(created) / PAGE)


def test_customers_deleted_since_never_add_a_page_and_new_ones_land_on_top() -> None:
    created = [NOW - 7 * n for n in range(1, 3_001)]
    windows = planned_windows(profile_of(created, NOW), NOW + 3_600, 10)
    later = [c for n, c in enumerate(created) if n % 37] + [NOW + 5 * n for n in range(150)]
    counts = _window_counts(later, windows)
    assert sum(counts) == len(later)
    planned_pages = [math.ceil(n / PAGE) for n in _window_counts(created, windows)]
    assert all(
        math.ceil(n / PAGE) <= planned
        for n, planned in zip(counts[1:], planned_pages[1:], strict=True)
    )
    newest_gte = windows[0][0]
    assert newest_gte is not None
    assert all(c >= newest_gte for c in later if c >= NOW)


def test_a_second_shared_by_many_customers_is_never_split() -> None:
    created = [NOW - n for n in range(1, 501)] + [TIE] * 250 + [TIE - n for n in range(1, 501)]
    windows = planned_windows(profile_of(created, NOW), NOW, 12)
    holding_tie = [w for w in windows if (w[0] is None or w[0] <= TIE) and w[1] > TIE]
    assert len(holding_tie) == 1
    assert sum(_window_counts(created, windows)) == len(created)


def test_small_accounts_and_a_bound_below_the_profile_keep_one_open_window() -> None:
    assert planned_windows(profile_of([NOW - 5] * 40, NOW), NOW, 8) == [(None, NOW)]
    assert planned_windows(ListingProfile(NOW, 0, ()), NOW, 8) == [(None, NOW)]
    profile = profile_of([NOW - n for n in range(1, 1_001)], NOW)
    windows = planned_windows(profile, NOW - 500, 10)  # a clock gone back: no cut above it
    assert all(lt <= NOW - 500 for _gte, lt in windows)
    assert windows[-1][0] is None


# The sandbox paged by the plan --------------------------------------------------------


@pytest.fixture
def account(sandbox_server: SandboxServer) -> Iterator[SandboxServer]:
    """1,350 customers over five years, 250 of them created in one second."""
    sandbox = sandbox_server
    sandbox.store.reset()
    load_into_sandbox(sandbox.store, generate_account(1_100, seed=11, now=NOW))
    data = sandbox.store.mode("test")
    for n in range(250):
        data.add_customer({"email": f"tie{n}@example.com"}, created=TIE)
    yield sandbox
    sandbox.store.reset()


def _listing(
    tmp_path: Path, name: str, windows: list[tuple[int | None, int]], created_lt: int
) -> tuple[CheckpointStore, Path]:
    store = CheckpointStore(sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}"))
    work_dir = tmp_path / name
    store.start_listing(name, "job", created_lt=created_lt, work_dir=str(work_dir), windows=windows)
    return store, work_dir


def _list_requests(sandbox: SandboxServer) -> int:
    return sum(1 for e in sandbox.request_log.entries() if e.path == "/v1/customers")


def test_a_planned_listing_asks_the_fewest_pages_and_lists_everyone(
    account: SandboxServer, tmp_path: Path
) -> None:
    gateway = StripeGateway(KEY, api_base=account.url, limiter=RequestLimiter(100.0))
    reference = merge_records(list(iter_customers(gateway, created_lt=NOW + 1)))
    store, work_dir = _listing(tmp_path, "first", window_bounds(NOW + 1, 1), NOW + 1)
    first = list_windows(gateway, store, "first", work_dir, workers=8)
    assert [r["id"] for r in first] == [r["id"] for r in reference]

    profile = profile_of([int(r["created"]) for r in first], NOW + 1)
    windows = planned_windows(profile, NOW + 1, 8)
    account.request_log.clear()
    store, work_dir = _listing(tmp_path, "planned", windows, NOW + 1)
    planned = list_windows(
        gateway, store, "planned", work_dir, workers=8, bottom=oldest_customer(profile)
    )
    assert [r["id"] for r in planned] == [r["id"] for r in reference]
    assert _list_requests(account) == math.ceil(len(reference) / PAGE)

    # A day later: 40 customers deleted, 30 new. Still one request per page of last time's
    # customers, the new ones on top of them; and still everyone, each once.
    data = account.store.mode("test")
    for record in reference[100:1_300:30]:
        data.delete_customer(data.customers[record["id"]])
    for n in range(30):
        data.add_customer({"email": f"new{n}@example.com"}, created=NOW + 100 + n)
    later = merge_records(list(iter_customers(gateway, created_lt=NOW + 200)))
    account.request_log.clear()
    store, work_dir = _listing(tmp_path, "later", planned_windows(profile, NOW + 200, 8), NOW + 200)
    listed = list_windows(
        gateway, store, "later", work_dir, workers=8, bottom=oldest_customer(profile)
    )
    assert [r["id"] for r in listed] == [r["id"] for r in later]
    assert _list_requests(account) <= math.ceil(len(reference) / PAGE) + 1


# The jobs keep the shape and use it --------------------------------------------------


def test_the_next_run_of_any_job_lists_by_the_last_listings_shape(world: SeededWorld) -> None:
    settings = world.settings
    sandbox = world.sandbox
    customers = len(world.account.customers) - len(world.account.deleted_customer_ids)
    sandbox.request_log.clear()
    execute_job(RECONCILE, settings)
    state = StateStore(settings.state.url)
    try:
        store = CheckpointStore(state.engine)
        gateway = StripeGateway(TEST_KEY, api_base=sandbox.url)
        kept = store.profile(gateway.account, "test")
        assert kept is not None
        assert kept.customers == customers
        # Another key's account has no shape of its own.
        other = StripeGateway("sk_test_" + "SomeOtherAccount0123", api_base=sandbox.url)
        assert store.profile(other.account, "test") is None
    finally:
        state.close()

    time.sleep(1.1)  # the next listing's bound, a second later
    sandbox.request_log.clear()
    outcome = execute_job(CARD_EXPIRY, settings)
    assert outcome.exit_code in (0, 1)
    assert _list_requests(sandbox) == math.ceil(customers / PAGE)
    # Paged by windows cut at the kept marks, not by one cursor or cuts made on the way.
    starts = {
        int(e.params["created"]["gte"])
        for e in sandbox.request_log.entries()
        if e.path == "/v1/customers" and "gte" in e.params.get("created", {})
    }
    assert starts
    assert starts <= {second for second, _before in kept.marks}
