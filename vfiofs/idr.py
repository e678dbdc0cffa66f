"""The id rule of lib/idr.c: the lowest free id, from a floor.

Every id space vfiofs mirrors hands out ids this way and reuses them once freed: the
vfio cdev minors (``ida_alloc`` on ``vfio.device_ida``), the iommufd object ids
(``xa_alloc`` on an ``XA_FLAGS_ALLOC1`` xarray, so from 1), IOMMU group ids and the vfio
group minors (``ida_alloc_max`` / ``idr_alloc``).
"""

from __future__ import annotations

from collections.abc import Container


def ida_alloc_min(used: Container[int], start: int = 0) -> int:
    """The smallest id ``>= start`` that is not in ``used`` (``ida_alloc_min``).

    The caller records the id; ``used`` is whatever already holds the ids in use (a set,
    or the keys of the table the ids index).
    """
    i = start
    while i in used:
        i += 1
    return i
