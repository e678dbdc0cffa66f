"""The lowest-free-id rule (lib/idr.c) every id space of vfiofs uses."""

from __future__ import annotations

from vfiofs.idr import ida_alloc_min


def test_ida_alloc_min_empty_gives_the_floor() -> None:
    assert ida_alloc_min(set()) == 0
    assert ida_alloc_min({}, 1) == 1


def test_ida_alloc_min_reuses_the_lowest_hole() -> None:
    assert ida_alloc_min({0, 1, 3}) == 2
    assert ida_alloc_min({1: "a", 2: "b"}, 1) == 3
    assert ida_alloc_min({0, 2}, 1) == 1
