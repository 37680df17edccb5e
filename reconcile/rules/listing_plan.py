"""Where to cut a fresh listing into `created` windows, from the shape of the account's last one.

A window costs its customers over 100 requests, rounded up: a window whose customers are
not a whole number of pages ends on a short page, and a window with none costs a request
for nothing. A listing that knows nothing of the account cuts where it guesses, and pays
about half a page per window. The account's last listing knows, for every hundredth
customer from the oldest, how many customers were created before that customer's second
(a `ListingProfile`). Cut there, where that count is a whole number of pages, and every
window below the newest ends on a full page next time too: Stripe sets `created` when a
customer is created, so new customers only land in the newest window, and a customer
deleted since only shortens a window's last page. The newest window holds what is left
over and everything new; the listing still cuts it (or any window) while it runs, should
the account have changed more than that.

Pure: the profile is built by `profile_of` from the `created` of every customer listed,
and turned into windows by `planned_windows`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["PAGE", "ListingProfile", "oldest_customer", "planned_windows", "profile_of"]

# Customers per list request: Stripe's largest `limit`.
PAGE = 100


@dataclass(frozen=True)
class ListingProfile:
    """The shape of a complete listing: `marks` holds, for the customer at every hundredth
    place from the oldest (the oldest first), its `created` second and how many customers
    were created before that second (fewer than its place where several share the
    second); ascending."""

    created_lt: int
    customers: int
    marks: tuple[tuple[int, int], ...]


def profile_of(created: Iterable[int], created_lt: int) -> ListingProfile:
    """The profile of a listing whose customers were created at `created` (any order, each
    customer once), every one before `created_lt`."""
    ordered = sorted(created)
    marks = tuple((second, bisect.bisect_left(ordered, second)) for second in ordered[::PAGE])
    return ListingProfile(created_lt=created_lt, customers=len(ordered), marks=marks)


def oldest_customer(profile: ListingProfile) -> int | None:
    """When the account's oldest customer was created, as the profile saw it: none can be
    older now (Stripe sets `created` when a customer is created)."""
    return profile.marks[0][0] if profile.marks else None


def planned_windows(
    profile: ListingProfile, created_lt: int, windows: int
) -> list[tuple[int | None, int]]:
    """About `windows` windows `[gte, lt)` up to `created_lt`, newest first, the oldest open
    below, each but the newest holding a whole number of pages of the profile's customers
    where the customers sharing a second allow it (see the module)."""
    pages = math.ceil(profile.customers / PAGE)
    per_window = max(1, math.ceil(pages / max(1, windows))) * PAGE
    cuts: list[int] = []
    below = 0
    for second, before in profile.marks:
        if second >= created_lt or (cuts and second <= cuts[-1]):
            continue
        size = before - below
        # A whole number of pages; failing that (a second shared by many customers sits
        # across every such place), cut anyway rather than grow one window without end.
        if (size >= per_window and size % PAGE == 0) or size >= 2 * per_window:
            cuts.append(second)
            below = before
    edges: list[int | None] = [None, *cuts]
    tops = [*cuts, created_lt]
    return list(zip(edges, tops, strict=True))[::-1]
