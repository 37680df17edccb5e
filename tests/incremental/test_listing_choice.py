"""Which listing a run takes, and why: the pure rule (reconcile.rules.events.choose_listing), the
option and settings models, and the events' order and the chaining of their changes."""

from __future__ import annotations

from typing import Any

import pytest

from reconcile.errors import ConfigError
from reconcile.job_options import parse_job_options
from reconcile.rules.events import (
    MirrorIdentity,
    apply_events,
    choose_listing,
    events_in_order,
)
from reconcile.settings import load_settings

DAY = 86_400
NOW = 1_800_000_000.0
IDENTITY = MirrorIdentity("reconcile", "test", "acct", "0.1.0+mirror1", ("user_id", "plan"))


def _choose(**changes: Any) -> tuple[str, str]:
    arguments: dict[str, Any] = {
        "requested": None,
        "enabled": True,
        "all_cards": False,
        "wanted": IDENTITY,
        "found": IDENTITY,
        "now": NOW,
        "watermark": NOW - DAY,
        "full_listed_at": NOW - DAY,
        "full_every_days": 7.0,
    }
    arguments.update(changes)
    choice = choose_listing(**arguments)
    return choice.listing, choice.reason


def _other(**changes: Any) -> MirrorIdentity:
    fields = {**IDENTITY.__dict__, **changes}
    return MirrorIdentity(**fields)


def test_incremental_when_enabled_and_the_mirror_stands() -> None:
    assert _choose() == ("incremental", "events since the last run")
    assert _choose(enabled=False, requested=True)[0] == "incremental"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"enabled": False}, "[incremental] enabled is false"),
        ({"requested": False}, "--full"),
        ({"found": None, "watermark": None, "full_listed_at": None}, "no customer mirror yet"),
        ({"found": _other(mode="live")}, "the other mode"),
        ({"found": _other(account="another")}, "another account"),
        ({"found": _other(tool_version="0.2.0+mirror1")}, "another version"),
        ({"found": _other(metadata_keys=("user_id",))}, "other metadata keys"),
        ({"watermark": NOW - 29 * DAY - 1, "full_every_days": 29}, "older than 29 days"),
        ({"full_listed_at": NOW - 7 * DAY}, "7 days old"),
        ({"all_cards": True}, "--all-cards"),
    ],
)
def test_a_full_listing_and_why(changes: dict[str, Any], reason: str) -> None:
    listing, why = _choose(**changes)
    assert listing == "full"
    assert reason in why


def test_the_safety_net_applies_to_an_explicit_incremental_too() -> None:
    assert _choose(requested=True, full_listed_at=NOW - 8 * DAY)[0] == "full"


def test_options_are_typed() -> None:
    assert parse_job_options("reconcile", {"incremental": True}, where="x").as_mapping()[
        "incremental"
    ]
    with pytest.raises(ConfigError, match=r"options\.incremental: expected true or false"):
        parse_job_options("card-expiry", {"incremental": "yes"}, where="[schedule.jobs.x]")
    with pytest.raises(ConfigError, match="unknown option"):
        parse_job_options("sync-metadata", {"incremental": True}, where="x")


def test_incremental_settings_are_checked(tmp_path: Any) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[incremental]\nenabled = true\nfull_every_days = 30\n")
    with pytest.raises(ConfigError, match="full_every_days"):
        load_settings(path, env={})
    path.write_text('[incremental]\nenabled = "yes"\n')
    with pytest.raises(ConfigError, match="enabled"):
        load_settings(path, env={})
    path.write_text("[incremental]\nenabled = true\noverlap_seconds = 600\n")
    loaded = load_settings(path, env={})
    assert loaded.incremental.enabled
    assert loaded.incremental.overlap_seconds == 600
    assert loaded.incremental.full_every_days == 7


def _event(event_id: str, created: int, kind: str, obj: dict[str, Any], **previous: Any) -> Any:
    data: dict[str, Any] = {"object": obj}
    if previous:
        data["previous_attributes"] = previous
    return {"id": event_id, "created": created, "type": kind, "data": data}


def _customer(name: str) -> dict[str, Any]:
    return {"id": "cus_1", "created": 10, "email": "a@x", "name": name, "metadata": {}}


def test_events_are_ordered_by_created_then_as_listed_and_deduplicated() -> None:
    listed = [  # newest first, as Stripe lists them; the second page repeats one
        _event("evt_c", 20, "customer.updated", _customer("C"), name="B"),
        _event("evt_b", 20, "customer.updated", _customer("B"), name="A"),
        _event("evt_a", 19, "customer.created", _customer("A")),
        _event("evt_b", 20, "customer.updated", _customer("B"), name="A"),
    ]
    ordered = events_in_order(listed, already_applied=["evt_a"])
    assert [e["id"] for e in ordered] == ["evt_b", "evt_c"]


def test_an_event_that_does_not_chain_marks_its_customer_unsure() -> None:
    held = {
        "cus_1": {
            "customer_id": "cus_1",
            "email": "a@x",
            "name": "A",
            "created": 10,
            "livemode": False,
            "default_payment_method": None,
        }
    }
    # B to C listed before A to B (back-dated): the first does not start from A.
    events = [
        _event("evt_2", 20, "customer.updated", _customer("C"), name="B"),
        _event("evt_1", 21, "customer.updated", _customer("B"), name="A"),
    ]
    result = apply_events(events, held, {}, (), seen_through=15)
    assert result.unsure == {"cus_1"}
    in_order = apply_events(list(reversed(events)), held, {}, (), seen_through=15)
    assert in_order.unsure == set()
    assert in_order.rows["cus_1"]["name"] == "C"
    late = apply_events(events[1:], held, {}, (), seen_through=21)
    assert late.unsure == {"cus_1"}  # created at or before the watermark, never applied
