"""The ``iommufd_access`` half of drivers/iommu/iommufd/device.c: CPU access to an IOAS
for emulated devices (mdev) and for internal users (a vIOMMU's HW queue).

An access is attached to one IOAS. ``pin_pages`` holds IOVA ranges (an IOAS_UNMAP that
meets a pinned range first asks the access holder to unpin through ``ops.unmap``, and
fails EBUSY if it does not); ``rw`` copies to or from the memory behind IOVAs through the
IOAS's areas, not through any IOMMU domain.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import attrs

from ..errors import KernelError
from .main import IommufdCtx, IommufdObject

IOMMUFD_ACCESS_RW_WRITE = 1 << 0
IOMMUFD_ACCESS_RW_KTHREAD = 1 << 1
IOMMUFD_ACCESS_RW_SLOW_PATH = 1 << 2  # __IOMMUFD_ACCESS_RW_SLOW_PATH


@attrs.define(eq=False)
class AccessOps:
    """``struct iommufd_access_ops``."""

    needs_pin_pages: bool = False
    unmap: Callable[[int, int], None] | None = None  # (iova, length)


@attrs.define(eq=False)
class IommufdAccess(IommufdObject):
    """``struct iommufd_access``. ``pins`` holds (iova, length, areas) per pin call."""

    ops: AccessOps = attrs.Factory(AccessOps)
    ioas: Any = None
    internal: bool = False
    pins: list[tuple[int, int, list[Any]]] = attrs.Factory(list)

    def destroy(self) -> None:
        iommufd_access_detach(self)


def iommufd_access_create(ictx: IommufdCtx, ops: AccessOps) -> IommufdAccess:
    """A new access, in the object table; its creator holds it (DESTROY: EBUSY)."""
    access = IommufdAccess(ictx, ops=ops)
    ictx.add(access)
    access.users += 1
    return access


def iommufd_access_create_internal(ictx: IommufdCtx) -> IommufdAccess:
    """An access of the core itself (HW queues): never in the object table."""
    return IommufdAccess(ictx, ops=AccessOps(needs_pin_pages=True), internal=True)


def iommufd_access_destroy(access: IommufdAccess) -> None:
    """The creator lets go: detach and drop the object."""
    access.users -= 1
    if access.internal:
        iommufd_access_detach(access)
    else:
        access.ictx.remove(access)


def _attach(access: IommufdAccess, ioas: Any) -> None:
    if access.ops.needs_pin_pages and ioas.iopt.domains:
        pass  # kernel: the IOAS alignment must not exceed PAGE_SIZE; always true here
    ioas.iopt.accesses.append(access)
    ioas.users += 1
    access.ioas = ioas


def iommufd_access_attach(access: IommufdAccess, ioas_id: int) -> None:
    """EINVAL if already attached, ENOENT for a bad IOAS id."""
    from .ioas import Ioas

    if access.ioas is not None:
        raise KernelError(errno.EINVAL, "access already attached")
    _attach(access, access.ictx.get(ioas_id, Ioas))


def iommufd_access_attach_internal(access: IommufdAccess, ioas: Any) -> None:
    _attach(access, ioas)


def iommufd_access_replace(access: IommufdAccess, ioas_id: int) -> None:
    """Move to another IOAS: EINVAL when unattached; a no-op to the same IOAS; nothing
    may stay pinned (EBUSY)."""
    from .ioas import Ioas

    if access.ioas is None:
        raise KernelError(errno.EINVAL, "access not attached")
    new = access.ictx.get(ioas_id, Ioas)
    if new is access.ioas:
        return
    if access.pins:
        raise KernelError(errno.EBUSY, "pages still pinned")
    iommufd_access_detach(access)
    _attach(access, new)


def iommufd_access_detach(access: IommufdAccess) -> None:
    ioas = access.ioas
    if ioas is None:
        return
    for iova, length, _ in list(access.pins):
        iommufd_access_unpin_pages(access, iova, length)
    if access in ioas.iopt.accesses:
        ioas.iopt.accesses.remove(access)
    ioas.users -= 1
    access.ioas = None


def _areas(access: IommufdAccess, iova: int, length: int) -> list[Any]:
    """The areas covering ``[iova, iova+length)`` entirely; ENOENT on a hole, EINVAL
    for a zero or wrapping length."""
    if access.ioas is None:
        raise KernelError(errno.ENOENT, "access not attached")
    if length == 0 or iova + length - 1 >= 1 << 64:
        raise KernelError(errno.EINVAL, "length")
    last = iova + length - 1
    areas = access.ioas.iopt.overlapping(iova, last)
    cur = iova
    for a in areas:
        if a.iova > cur:
            break
        cur = a.last + 1
    if not areas or cur <= last:
        raise KernelError(errno.ENOENT, f"{iova:#x}+{length:#x} is not mapped")
    return list(areas)


def iommufd_access_pin_pages(
    access: IommufdAccess, iova: int, length: int, *, write: bool
) -> list[tuple[Any, int, int]]:
    """Pin the range; returns (memory, address, length) pieces in IOVA order.
    EPERM to pin a read-only mapping for write."""
    from ..abi.iommufd import IOMMU_IOAS_MAP_WRITEABLE

    areas = _areas(access, iova, length)
    if write and any(not a.prot & IOMMU_IOAS_MAP_WRITEABLE for a in areas):
        raise KernelError(errno.EPERM, "read-only mapping")
    pieces = []
    last = iova + length - 1
    for a in areas:
        lo, hi = max(a.iova, iova), min(a.last, last)
        pieces.append((a.mm, a.user_va + lo - a.iova, hi - lo + 1))
        a.num_accesses += 1
    access.pins.append((iova, length, areas))
    return pieces


def iommufd_access_unpin_pages(access: IommufdAccess, iova: int, length: int) -> None:
    for i, (piova, plen, areas) in enumerate(access.pins):
        if piova == iova and plen == length:
            for a in areas:
                a.num_accesses -= 1
            del access.pins[i]
            return


def iommufd_access_rw(
    access: IommufdAccess, iova: int, data: bytes | int, flags: int
) -> bytes:
    """Read ``data`` bytes (an int) or write ``data`` (bytes) at ``iova``."""
    from ..abi.iommufd import IOMMU_IOAS_MAP_WRITEABLE

    write = bool(flags & IOMMUFD_ACCESS_RW_WRITE)
    length = len(data) if isinstance(data, bytes) else data
    areas = _areas(access, iova, length)
    out = bytearray()
    last = iova + length - 1
    for a in areas:
        lo, hi = max(a.iova, iova), min(a.last, last)
        va = a.user_va + lo - a.iova
        if write:
            if not a.prot & IOMMU_IOAS_MAP_WRITEABLE:
                raise KernelError(errno.EPERM, "read-only mapping")
            assert isinstance(data, bytes)
            a.mm.write(va, data[lo - iova : hi - iova + 1])
        else:
            out += a.mm.read(va, hi - lo + 1)
    return bytes(out)


def iommufd_access_notify_unmap(iopt: Any, iova: int, length: int) -> None:
    """An unmap meets pinned pages: tell every access holder to unpin."""
    last = iova + length - 1
    for access in list(iopt.accesses):
        if access.ops.unmap is not None and any(
            p < iova + length and p + n - 1 >= iova for p, n, _ in access.pins
        ):
            access.ops.unmap(iova, last - iova + 1)
