"""The work-queue listing: concurrent `created` windows, cut while they run, equal to one cursor."""

from __future__ import annotations

import gc
import itertools
import threading
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
    list_windows,
    listing_frame,
    max_piece_pages,
    merge_records,
    split_points,
    window_bounds,
)
from reconcile.rules.snapshots import customers_frame
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter import RequestLimiter
from reconcile.stripe_api.pager import iter_customers
from sandbox.runner import SandboxServer
from sandbox.seed import generate_account, load_into_sandbox
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


def test_split_points_cut_the_rest_only_where_it_is_worth_a_page() -> None:
    # 100 customers in the last 100 s: the rest down to 1000 s back holds ~900 more.
    assert split_points(NOW - 1_000, NOW, NOW - 100, 100, 2) == [NOW - 550]
    cuts = split_points(NOW - 1_000, NOW, NOW - 100, 100, 4)
    assert cuts == sorted(cuts, reverse=True)
    assert len(cuts) == 3
    assert all(NOW - 1_000 < c <= NOW - 100 for c in cuts)
    # Two pages or more per piece: ~9 pages left, so 20 idle workers get 4 pieces.
    assert len(split_points(NOW - 1_000, NOW, NOW - 100, 100, 20)) == 3
    # The rest spans under two seconds: customers sharing `created` cannot be cut.
    assert split_points(NOW - 101, NOW, NOW - 100, 100, 8) == []
    # Sparse: the rest would hold less than two pages at the density seen.
    assert split_points(NOW - 1_000, NOW, NOW - 900, 10, 8) == []
    assert split_points(NOW - 1_000, NOW, NOW - 100, 20, 8) == []
    # Open below: the floor stands in for the lower bound, and stays inside the window.
    cuts = split_points(None, NOW, NOW - 100, 100, 2, floor=NOW - 10_000)
    assert len(cuts) == 1
    assert NOW - 10_000 < cuts[0] <= NOW - 100


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


def test_a_long_rest_is_cut_near_the_cursor_and_the_oldest_piece_takes_what_is_left() -> None:
    # 100 customers in the last 100 s and a window open down to 10^6 s back: the guess of
    # what is left (~10,000 pages) is far too long for a young account, so pieces of at
    # most 4 pages sit right below the cursor and the last one keeps the rest.
    cuts = split_points(None, NOW, NOW - 100, 100, 5, floor=NOW - 1_000_000, max_pages=4)
    assert len(cuts) == 4
    assert cuts == [NOW - 500, NOW - 900, NOW - 1_300, NOW - 1_700]
    # Even with no idle worker, a rest above max_pages is cut once, so no cursor is left
    # with a long walk at the end of the listing.
    assert split_points(NOW - 10_000, NOW, NOW - 100, 100, 1, max_pages=4) == [NOW - 500]
    # A rest within max_pages and no idle worker: nothing to cut.
    assert split_points(NOW - 500, NOW, NOW - 100, 100, 1, max_pages=4) == []


def test_the_longest_rest_scales_with_the_rate() -> None:
    assert max_piece_pages(25.0) == 32.0  # Stripe's test limit: the run takes minutes
    assert max_piece_pages(100.0) == 10.0
    assert max_piece_pages(250.0) == 4.0  # ten times it: the run takes seconds
    assert max_piece_pages(10_000.0) == 4.0


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


def test_objects_older_than_the_listing_are_frozen_while_it_runs(
    account: SandboxServer, tmp_path: Path
) -> None:
    store, work_dir = _listing(tmp_path, window_bounds(NOW + 1, 1))
    before = gc.get_freeze_count()
    seen: list[int] = []
    list_windows(
        _gateway(account.url),
        store,
        "run1",
        work_dir,
        workers=4,
        on_page=lambda _records: seen.append(gc.get_freeze_count()),
    )
    assert seen
    assert min(seen) > before
    assert gc.get_freeze_count() == before


def test_an_account_without_customers_lists_nothing_and_stores_no_page(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    sandbox_server.store.reset()
    store, work_dir = _listing(tmp_path, window_bounds(NOW + 1, 3))

    assert list_windows(_gateway(sandbox_server.url), store, "run1", work_dir, workers=4) == []
    assert all(w.done and w.pages == 0 for w in store.windows("run1"))
    assert not work_dir.exists()
