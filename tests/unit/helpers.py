"""Setup shared by the core unit tests: callers with room, and a group attached to a
container the legacy way."""

from __future__ import annotations

import struct

from vfiofs.abi import vfio as V
from vfiofs.machine import Machine
from vfiofs.uaccess import FakeCaller, OurFile
from vfiofs.vfio.vfio import VfioGroupFile

MB = 1 << 20


def caller(size: int = 16 * MB, caps: frozenset[int] | None = None) -> FakeCaller:
    """A FakeCaller with ``size`` bytes of memory (and ``caps``, if given)."""
    c = FakeCaller() if caps is None else FakeCaller(caps=caps)
    c.mm.size = size
    c.mm.__attrs_post_init__()
    return c


def legacy_group(
    m: Machine, c: FakeCaller, container: object, gid: int = 0, fd: int = 5
) -> VfioGroupFile:
    """Open group ``gid``, give it ``container`` (a /dev/vfio/vfio container or an
    iommufd) with VFIO_GROUP_SET_CONTAINER, and pick type1v2 with VFIO_SET_IOMMU."""
    gf = m.core.groups[gid].open(c, 0)
    c.fds[fd] = OurFile(container)
    gf.ioctl(c, V.VFIO_GROUP_SET_CONTAINER, c.alloc(struct.pack("<i", fd)))
    container.ioctl(c, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)  # type: ignore[attr-defined]
    return gf
