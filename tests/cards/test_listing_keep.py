"""card-expiry's listing trims each customer as its page arrives: the parts are stored
trimmed, this run's pages are not read back, default-card rows are built in the listing's
workers, and a resumed listing still gives the same customers and cards."""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from jobs.card_expiry_job import (
    DEFAULT_CARD_EXPANDS,
    ListedDefaults,
    default_cards,
    trimmed_customer,
)
from reconcile.listing.checkpoints import CheckpointStore, RunInterrupted
from reconcile.listing.parts import read_parts, write_part
from reconcile.listing.walk import HeldPages, merge_records, page_windows, window_bounds
from reconcile.stripe_api.gateway import StripeGateway
from reconcile.stripe_api.limiter import RequestLimiter
from sandbox.loading import load_into_sandbox
from sandbox.runner import SandboxServer
from sandbox.seed import generate_account

KEY = "sk_test_" + "ListingKeep0123456789"
NOW = 1_790_000_000


@pytest.fixture
def account(sandbox_server: SandboxServer) -> Iterator[SandboxServer]:
    sandbox_server.store.reset()
    load_into_sandbox(sandbox_server.store, generate_account(700, seed=11, now=NOW))
    yield sandbox_server
    sandbox_server.store.reset()


def _walk(
    gateway: StripeGateway,
    store: CheckpointStore,
    work_dir: Path,
    listed: ListedDefaults,
    **options: Any,
) -> tuple[list[dict[str, Any]], HeldPages]:
    held: HeldPages = {}
    finished = page_windows(
        gateway,
        store,
        "run1",
        work_dir,
        workers=4,
        expand=DEFAULT_CARD_EXPANDS,
        keep=listed,
        held=held,
        **options,
    )
    pages = [(c.window, c.pages) for c in finished]
    return merge_records(read_parts(work_dir, pages, listed, held)), held


def test_a_kept_listing_stores_trimmed_pages_and_resumes_to_the_same_cards(
    account: SandboxServer, tmp_path: Path
) -> None:
    gateway = StripeGateway(KEY, api_base=account.url, limiter=RequestLimiter(200.0))
    full = merge_records(
        list(gateway.customers_list(created_lt=NOW + 1, expand=DEFAULT_CARD_EXPANDS))
    )
    expected = [trimmed_customer(record) for record in full]
    expected_cards = default_cards(full)
    assert len(expected_cards) > 100

    store = CheckpointStore(sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}"))
    work_dir = tmp_path / "work"
    store.start_listing(
        "run1",
        "card-expiry",
        created_lt=NOW + 1,
        work_dir=str(work_dir),
        windows=window_bounds(NOW + 1, 1),
    )
    stop = threading.Event()
    seen: list[int] = []

    def stop_after_three(page: list[dict[str, Any]]) -> None:
        # What a per-customer scan is handed is the trimmed customer, as stored.
        assert page == [trimmed_customer(record) for record in page]
        seen.append(len(page))
        if len(seen) == 3:
            stop.set()

    with pytest.raises(RunInterrupted):
        _walk(gateway, store, work_dir, ListedDefaults(), stop=stop, on_page=stop_after_three)
    stored = [json.loads(p.read_bytes())["data"] for p in sorted(work_dir.glob("w*.json"))]
    assert stored, "nothing was stored before the stop"
    for page in stored:
        # Stored at the size the job reads: the expanded objects' other fields are gone.
        assert page == [trimmed_customer(record) for record in page]

    # Resumed in a new process: the stored pages are read back through the same hook.
    listed = ListedDefaults()
    records, held = _walk(gateway, store, work_dir, listed)
    assert records == expected
    assert default_cards(records, listed) == expected_cards
    # This run's pages come from memory, the stored ones from disk, and every row was
    # built while listing: each is the very object built for its customer.
    from_memory = {id(record) for page in held.values() for record in page}
    assert 0 < len(from_memory) < len(records)
    assert sum(id(record) in from_memory for record in records) == len(from_memory)
    rows = default_cards(records, listed)
    built = {id(row) for _, row in listed.built.values() if row is not None}
    assert {id(row) for row in rows} <= built


def test_a_row_is_built_again_for_a_record_other_than_the_one_it_was_built_from() -> None:
    card = {
        "id": "pm_1",
        "object": "payment_method",
        "type": "card",
        "card": {
            "brand": "visa",
            "last4": "4242",
            "exp_month": 1,
            "exp_year": 2030,
            "fingerprint": "fp",
        },
    }
    listed = ListedDefaults()
    first = listed(
        {"id": "cus_1", "created": 5, "invoice_settings": {"default_payment_method": card}}
    )
    # The same customer listed again (a page fetched again) after its card was replaced.
    later = trimmed_customer(
        {
            "id": "cus_1",
            "created": 5,
            "invoice_settings": {"default_payment_method": {**card, "id": "pm_2"}},
        }
    )
    assert [row["payment_method_id"] for row in default_cards([first], listed)] == ["pm_1"]
    assert [row["payment_method_id"] for row in default_cards([later], listed)] == ["pm_2"]
    assert default_cards([first], listed)[0] is listed.built["cus_1"][1]


def test_held_pages_are_taken_as_held_and_the_others_read_through_keep(tmp_path: Path) -> None:
    write_part(tmp_path, 0, 0, json.dumps({"data": [{"id": "a", "x": 1}]}).encode())
    write_part(tmp_path, 0, 1, json.dumps({"data": [{"id": "b", "x": 2}]}).encode())
    held_page = [{"id": "b-held"}]

    def keep(record: dict[str, Any]) -> dict[str, Any]:
        return {"id": record["id"]}

    records = read_parts(tmp_path, [(0, 2)], keep, {(0, 1): held_page})
    assert records == [{"id": "a"}, {"id": "b-held"}]
    assert records[1] is held_page[0]
    # A held page past the window's checkpoint is not part of the listing.
    assert read_parts(tmp_path, [(0, 1)], keep, {(0, 1): held_page}) == [{"id": "a"}]


def test_full_collections_are_rare_while_listings_run_and_restored_after() -> None:
    from reconcile.listing.walk import _rare_full_collections

    before = gc.get_threshold()
    with _rare_full_collections():
        assert gc.get_threshold()[:2] == before[:2]
        assert gc.get_threshold()[2] >= 1_000
        with _rare_full_collections():  # a second listing in the same process
            pass
        assert gc.get_threshold()[2] >= 1_000
    assert gc.get_threshold() == before
