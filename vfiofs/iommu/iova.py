"""IOVA interval rules shared by vfio type1 and iommufd: the usable space left by
reserved ranges, and the search for mappings that overlap a range.

Ranges are closed, ``(start, last)``, as the kernel's interval trees keep them. Mapping
records (type1's ``vfio_dma``, iommufd's ``iopt_area``) sit in lists sorted by ``iova``
and never overlap, so one bisection finds the first candidate (``interval_tree_iter_first``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar


class IovaInterval(Protocol):
    """A mapping record: it covers ``[iova, last]``."""

    @property
    def iova(self) -> int: ...

    @property
    def last(self) -> int: ...


M = TypeVar("M", bound=IovaInterval)


def iova_holes(
    start: int, last: int, reserved: Iterable[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The parts of ``[start, last]`` that no reserved range covers, ascending.

    This is type1's aperture minus every group's reserved regions
    (``vfio_iommu_resv_exclude``) and iommufd's holes of the reserved tree
    (``interval_tree_for_each_span`` in ``iommufd_ioas_iova_ranges``).
    """
    out: list[tuple[int, int]] = []
    cur = start
    for lo, hi in sorted(reserved):
        if hi < cur:
            continue
        if lo > last:
            break
        if lo > cur:
            out.append((cur, lo - 1))
        cur = hi + 1
    if cur <= last:
        out.append((cur, last))
    return out


def iova_reserved_hit(
    reserved: Iterable[tuple[int, int]], iova: int, last: int
) -> bool:
    """Whether any reserved range meets ``[iova, last]`` (``iopt_reserved_iter_first``)."""
    return any(lo <= last and iova <= hi for lo, hi in reserved)


def iova_overlaps(maps: Sequence[M], iova: int, last: int) -> list[M]:
    """The records of ``maps`` (sorted by iova, disjoint) that meet ``[iova, last]``."""
    i = bisect.bisect_left(maps, iova, key=_last)
    out = []
    while i < len(maps) and maps[i].iova <= last:
        out.append(maps[i])
        i += 1
    return out


def _last(m: IovaInterval) -> int:
    return m.last
