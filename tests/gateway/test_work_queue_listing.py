"""The work-queue listing: concurrent `created` windows, cut while they run, equal to one cursor."""

from __future__ import annotations

import itertools
import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from reconcile.listing.checkpoints import (
    CheckpointStore,
    PageStored,
    RunInterrupted,
    WindowCheckpoint,
    WindowCut,
)
from reconcile.listing.walk import (
    STRIPE_FLOOR,
    _Queue,
    cursors_needed,
    list_windows,
    listing_frame,
    merge_records,
    rest_pages,
    split_point,
    window_bounds,
)
from reconcile.rules.snapshots import customers_frame
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter import RequestLimiter
from reconcile.stripe_api.pager import iter_customers
from sandbox.loading import load_into_sandbox
from sandbox.runner import SandboxConfig, SandboxServer
from sandbox.seed import generate_account
from tests.gateway.test_pager_fallback import CUSTOMERS, _NoCreatedFilter

KEY = "sk_test_" + "WorkQueue0123456789ab"
NOW = 1_790_000_000
TIE = NOW - 40 * 86_400  # 250 customers share this second
BURST = NOW - 3_600  # 400 customers within the last hour


@pytest.fixture
def account(sandbox_server: SandboxServer) -> Iterator[SandboxServer]:
    """600 customers over five years, 250 created in one second, 400 in one recent hour."""
    sandbox = sandbox_server
    sandbox.store.reset()
    load_into_sandbox(sandbox.store, generate_account(600, seed=7, now=NOW))
    data = sandbox.store.mode("test")
    for n in range(250):
        data.add_customer({"email": f"tie{n}@example.com"}, created=TIE)
    for n in range(400):
        data.add_customer({"email": f"burst{n}@example.com"}, created=BURST + n * 9)
    yield sandbox
    sandbox.store.reset()


def _gateway(url: str) -> StripeGateway:
    return StripeGateway(KEY, api_base=url, limiter=RequestLimiter(25.0))


def _listing(tmp_path: Path, windows: list[tuple[int | None, int]]) -> tuple[CheckpointStore, Path]:
    store = CheckpointStore(sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}"))
    work_dir = tmp_path / "work"
    store.start_listing("run1", "job", created_lt=NOW + 1, work_dir=str(work_dir), windows=windows)
    return store, work_dir


def test_the_merged_listing_equals_one_cursor_and_dense_windows_are_cut(
    account: SandboxServer, tmp_path: Path
) -> None:
    gateway = _gateway(account.url)
    sequential = list(iter_customers(gateway, created_lt=NOW + 1))
    assert len(sequential) > 1_000

    store, work_dir = _listing(tmp_path, window_bounds(NOW + 1, 1))
    merged = list_windows(gateway, store, "run1", work_dir, workers=8)

    assert [r["id"] for r in merged] == [r["id"] for r in merge_records(sequential)]
    assert len({r["id"] for r in merged}) == len(merged)
    assert merged == sorted(merged, key=lambda r: (-r["created"], r["id"]))
    windows = store.windows("run1")
    assert len(windows) > 4, "one window for 1,250 customers: nothing was cut"
    assert all(w.done for w in windows)
    assert sum(w.rows for w in windows) == len(sequential)
    # The cuts partition the range: adjacent, no gap, no overlap.
    bounds = sorted((w.created_gte or 0, w.created_lt) for w in windows)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    # The customers sharing one second sit in a single window, paged by one cursor.
    tied = {w.window for w in windows if (w.created_gte or 0) <= TIE < w.created_lt}
    assert len(tied) == 1
    # The snapshot built by Arrow from the stored pages is the same listing.
    keys = ["user_id", "plan", "env"]
    pd.testing.assert_frame_equal(
        listing_frame(work_dir, windows, keys), customers_frame(merge_records(sequential), keys)
    )


def test_a_stopped_listing_resumes_to_the_same_result_without_refetching(
    account: SandboxServer, tmp_path: Path
) -> None:
    gateway = _gateway(account.url)
    reference = merge_records(list(iter_customers(gateway, created_lt=NOW + 1)))
    store, work_dir = _listing(tmp_path, window_bounds(NOW + 1, 1))
    stop = threading.Event()
    pages: list[int] = []

    def stop_after_five(page: list[dict[str, Any]]) -> None:
        pages.append(len(page))
        if len(pages) == 5:
            stop.set()

    with pytest.raises(RunInterrupted):
        list_windows(
            gateway, store, "run1", work_dir, workers=4, stop=stop, on_page=stop_after_five
        )
    stored = sum(w.rows for w in store.windows("run1"))
    assert 0 < stored < len(reference)

    account.request_log.clear()
    resumed = list_windows(gateway, store, "run1", work_dir, workers=4)
    assert [r["id"] for r in resumed] == [r["id"] for r in reference]
    fetched = sum(len(e.params.get("limit", "")) > 0 for e in account.request_log.entries())
    # Only what was not stored is fetched again (plus one short page per window).
    assert fetched <= -(-(len(reference) - stored) // 100) + len(store.windows("run1"))


def test_a_bounded_rest_is_cut_in_its_middle() -> None:
    assert split_point(NOW - 1_000, NOW - 100, listing_lt=NOW) == NOW - 550
    # The window keeps its cursor's second: the cut is never above `oldest_seen`.
    assert split_point(NOW - 102, NOW - 100, listing_lt=NOW) == NOW - 101
    # The rest spans under two seconds: customers sharing `created` cannot be cut.
    assert split_point(NOW - 101, NOW - 100, listing_lt=NOW) is None
    assert split_point(NOW - 100, NOW - 100, listing_lt=NOW) is None
    # The account's oldest customer bounds the rest once known.
    assert split_point(NOW - 1_000, NOW - 100, listing_lt=NOW, bottom=NOW - 300) == NOW - 200


def test_the_rest_open_below_is_cut_at_a_geometric_mean_until_the_bottom_is_known() -> None:
    floor = NOW - 1_000_000
    # 100 s listed, 10^6 s possible: the cut sits 10^4 s back, not half way to 2010.
    assert split_point(None, NOW - 100, listing_lt=NOW, floor=floor) == NOW - 10_000
    # Deeper in the listing the guess reaches further back, never below the floor.
    cut = split_point(None, NOW - 250_000, listing_lt=NOW, floor=floor)
    assert cut == NOW - 500_000
    assert split_point(None, floor + 1, listing_lt=NOW, floor=floor) is None
    # Known bottom: the middle of what is left above it.
    assert split_point(None, NOW - 100, listing_lt=NOW, bottom=NOW - 1_100, floor=floor) == (
        NOW - 600
    )


def test_rest_pages_follow_the_windows_own_density() -> None:
    window = WindowCheckpoint(0, NOW - 10_000, NOW, "cus_x", 2, 200, False)
    # 200 customers in the last 1,000 s: 9,000 s more hold ~1,800, 18 pages.
    assert rest_pages(window, NOW - 1_000) == pytest.approx(18.0)
    assert rest_pages(window, NOW - 1_000, bottom=NOW - 5_500) == pytest.approx(9.0)
    open_below = WindowCheckpoint(0, None, NOW, "cus_x", 1, 100, False)
    assert rest_pages(open_below, NOW - 100, floor=NOW - 1_100) == pytest.approx(10.0)
    assert STRIPE_FLOOR < NOW


def test_cursors_follow_the_rate_and_the_page_time() -> None:
    assert cursors_needed(20.0, 0.33) == 7  # Stripe's test limit at its share, 300 ms pages
    assert cursors_needed(80.0, 0.33) == 27
    assert cursors_needed(1.0, 0.1) == 1


@pytest.fixture
def rejecting_server() -> Iterator[tuple[str, list[dict[str, list[str]]]]]:
    seen: list[dict[str, list[str]]] = []
    handler = type("Handler", (_NoCreatedFilter,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def test_a_server_that_rejects_created_is_paged_by_one_cursor(
    rejecting_server: tuple[str, list[dict[str, list[str]]]], tmp_path: Path
) -> None:
    url, seen = rejecting_server
    store = CheckpointStore(sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}"))
    windows: list[tuple[int | None, int]] = [(1_200, 1_240), (1_100, 1_200), (None, 1_100)]
    store.start_listing(
        "run1", "job", created_lt=1_240, work_dir=str(tmp_path / "w"), windows=windows
    )

    listed = list_windows(_gateway(url), store, "run1", tmp_path / "w", workers=8)

    assert [r["id"] for r in listed] == [c["id"] for c in CUSTOMERS if c["created"] < 1_240]
    plain = [q for q in seen if not any(name.startswith("created") for name in q)]
    cursors = [q.get("starting_after", [None])[0] for q in plain]
    # One cursor: only the first window starts from the top; each later one starts after
    # the last customer of the one before (its first page may be asked for twice).
    assert cursors.count(None) == 1
    assert len(plain) <= -(-len(CUSTOMERS) // 100) + len(windows)
    assert len(store.windows("run1")) == len(windows)  # nothing cut without the filter


class _FailingStore(CheckpointStore):
    """Commits its first `allowed` batches, then fails like a database gone away."""

    def __init__(self, engine: sa.Engine, allowed: int) -> None:
        super().__init__(engine)
        self.allowed = allowed
        self.batches = 0

    def apply(self, listing_id: str, changes: Any) -> None:
        self.batches += 1
        if self.batches > self.allowed:
            raise sa.exc.OperationalError("UPDATE", {}, Exception("database is locked"))
        super().apply(listing_id, changes)


def test_a_failed_checkpoint_commit_stops_the_listing_with_that_error(
    account: SandboxServer, tmp_path: Path
) -> None:
    store = _FailingStore(sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}"), allowed=2)
    store.start_listing(
        "run1", "job", created_lt=NOW + 1, work_dir=str(tmp_path / "w"), windows=[(None, NOW + 1)]
    )
    with pytest.raises(sa.exc.OperationalError, match="database is locked"):
        list_windows(_gateway(account.url), store, "run1", tmp_path / "w", workers=8)
    # What was committed before the failure is a state the listing went through: each
    # window's pages are stored, and a resumed run with a working database completes.
    resumed = list_windows(
        _gateway(account.url), CheckpointStore(store.engine), "run1", tmp_path / "w", workers=8
    )
    reference = merge_records(list(iter_customers(_gateway(account.url), created_lt=NOW + 1)))
    assert [r["id"] for r in resumed] == [r["id"] for r in reference]


def test_checkpoint_changes_applied_in_one_batch_equal_the_same_changes_one_by_one(
    tmp_path: Path,
) -> None:
    def replay(batched: bool) -> list[WindowCheckpoint]:
        store = CheckpointStore(sa.create_engine(f"sqlite:///{tmp_path / f'{batched}.db'}"))
        store.start_listing("run1", "job", created_lt=1_000, work_dir="w", windows=[(None, 1_000)])
        piece = WindowCheckpoint(1, None, 600, None, 0, 0, False)
        changes = [
            PageStored(0, "cus_a", 1, 100, False),
            WindowCut(0, 600, piece),
            PageStored(1, "cus_b", 1, 40, True),
            PageStored(0, "cus_c", 2, 170, True),
        ]
        if batched:
            store.apply("run1", changes)
        else:
            for change in changes:
                store.apply("run1", [change])
        return store.windows("run1")

    assert (
        replay(True)
        == replay(False)
        == [
            WindowCheckpoint(0, 600, 1_000, "cus_c", 2, 170, True),
            WindowCheckpoint(1, None, 600, "cus_b", 1, 40, True),
        ]
    )


def test_an_account_without_customers_lists_nothing_and_stores_no_page(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    sandbox_server.store.reset()
    store, work_dir = _listing(tmp_path, window_bounds(NOW + 1, 3))

    assert list_windows(_gateway(sandbox_server.url), store, "run1", work_dir, workers=4) == []
    assert all(w.done and w.pages == 0 for w in store.windows("run1"))
    assert not work_dir.exists()


@pytest.fixture(scope="module")
def slow_account() -> Iterator[SandboxServer]:
    """3,000 customers over five years behind 100 to 200 ms answers, Stripe's limits."""
    with SandboxServer(SandboxConfig(latency_ms=100.0, jitter_ms=100.0)) as sandbox:
        load_into_sandbox(sandbox.store, generate_account(3_000, seed=3, now=NOW))
        yield sandbox


def test_windows_are_cut_only_as_the_rate_needs_them_and_cost_few_pages(
    slow_account: SandboxServer, tmp_path: Path
) -> None:
    gateway = StripeGateway(KEY, api_base=slow_account.url, limiter=RequestLimiter(20.0))
    store, work_dir = _listing(tmp_path, window_bounds(NOW + 1, 1))

    listed = list_windows(gateway, store, "run1", work_dir, workers=12)

    fewest = -(-len(listed) // 100)
    windows = store.windows("run1")
    # 20 requests a second at 100-200 ms a page needs a few cursors: the one window is cut,
    # but no further than the rate needs, its start and its end (12 workers would allow
    # twelve at once, and more as they end).
    assert 2 <= len(windows) <= 9
    pages = gateway.stats.by_endpoint["GET /v1/customers"]
    # Each window ends on a short page; an empty one costs a page too.
    assert pages <= fewest + len(windows)
    reference = merge_records(list(iter_customers(_gateway(slow_account.url), created_lt=NOW + 1)))
    assert [r["id"] for r in listed] == [r["id"] for r in reference]


def test_the_listing_stores_each_customer_as_stripe_sent_it(
    slow_account: SandboxServer, tmp_path: Path
) -> None:
    expand = ["invoice_settings.default_payment_method", "default_source"]
    request = urllib.request.Request(
        f"{slow_account.url}/v1/customers?limit=100"
        "&expand[]=data.invoice_settings.default_payment_method&expand[]=data.default_source"
    )
    request.add_header("Authorization", f"Bearer {KEY}")
    with urllib.request.urlopen(request) as answer:
        sent = json.loads(answer.read())["data"]
    store, work_dir = _listing(tmp_path, window_bounds(NOW + 1, 1))

    listed = list_windows(
        _gateway(slow_account.url), store, "run1", work_dir, workers=2, expand=expand
    )

    assert listed[:100] == sent
    assert any(isinstance(r["invoice_settings"]["default_payment_method"], dict) for r in sent)


def test_the_accounts_end_is_learnt_only_once_every_window_below_is_listed() -> None:
    lowest = WindowCheckpoint(2, None, NOW - 1_000, None, 0, 0, False)
    middle = WindowCheckpoint(1, NOW - 1_000, NOW - 100, "cus_m", 3, 250, True)
    queue = _Queue([WindowCheckpoint(0, NOW - 100, NOW, None, 0, 0, False), middle, lowest], 4)
    # The window open below is still to be listed: customers may lie below the middle one.
    queue.window_done(middle, NOW - 900)
    assert queue.bottom is None
    # Listed, and empty: the middle window held the oldest customer.
    queue.update(WindowCheckpoint(2, None, NOW - 1_000, None, 0, 0, True))
    queue.window_done(middle, NOW - 900)
    assert queue.bottom == NOW - 900
    # Later estimates stop there.
    assert split_point(None, NOW - 500, listing_lt=NOW, bottom=queue.bottom) == NOW - 700
