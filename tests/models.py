"""Plain models of kernel rules that several tests check the emulation against."""

from __future__ import annotations

import errno


def type1_map(maps: dict[int, int], iova: int, size: int) -> int:
    """MAP_DMA on type1: EINVAL for size 0, EEXIST on any overlap, else one new entry."""
    if size == 0:
        return -errno.EINVAL
    if any(i < iova + size and iova < i + s for i, s in maps.items()):
        return -errno.EEXIST
    maps[iova] = size
    return 0


def type1_unmap(maps: dict[int, int], iova: int, size: int, v2: bool) -> int:
    """UNMAP_DMA on type1: v2 refuses to split (EINVAL); v1 stops at a mapping that starts
    before ``iova`` and removes whole mappings that start inside. Returns bytes unmapped."""
    if size == 0:
        return -errno.EINVAL
    hit = sorted(i for i, s in maps.items() if i < iova + size and iova < i + s)
    if v2 and any(i < iova or i + maps[i] > iova + size for i in hit):
        return -errno.EINVAL
    if not v2 and hit and hit[0] < iova:
        return 0
    return sum(maps.pop(i) for i in hit)
