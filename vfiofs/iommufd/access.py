"""The ``iommufd_access`` half of drivers/iommu/iommufd/device.c: CPU access to an IOAS
for emulated devices (mdev; here the selftest's access fds) and for the core itself (a
vIOMMU's HW queue). The struct, its unpin and its teardown are in iommufd_private.py.

An access is attached to one IOAS. ``pin_pages`` holds IOVA ranges: an IOAS_UNMAP that
meets a pinned range first asks the holder to unpin through ``ops.unmap`` (and an
internal pin makes the unmap EBUSY); ``rw`` copies to or from the memory behind IOVAs
through the IOAS's areas, not through any IOMMU domain.
"""

from __future__ import annotations

import errno

from ..abi.iommufd import IOMMU_IOAS_MAP_WRITEABLE
from ..errors import KernelError
from ..uaccess import MemorySource
from .io_pagetable import U64_MAX, iopt_area_contig
from .iommufd_private import AccessOps, Ioas, IommufdAccess, IommufdCtx

IOMMUFD_ACCESS_RW_WRITE = 1 << 0
IOMMUFD_ACCESS_RW_KTHREAD = 1 << 1


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
        access.detach()
    else:
        access.ictx.remove(access)


def _attach(access: IommufdAccess, ioas: Ioas) -> None:
    """``iommufd_access_change_ioas``: EADDRINUSE when the IOAS holds an area that the
    access's alignment does not suit (``iopt_add_access``)."""
    ioas.iopt.add_access(access)
    ioas.users += 1
    access.ioas = ioas


def iommufd_access_attach(access: IommufdAccess, ioas_id: int) -> None:
    """EINVAL if already attached, ENOENT for a bad IOAS id."""
    if access.ioas is not None:
        raise KernelError(errno.EINVAL, "access already attached")
    _attach(access, access.ictx.get(ioas_id, Ioas))


def iommufd_access_attach_internal(access: IommufdAccess, ioas: Ioas) -> None:
    _attach(access, ioas)


def iommufd_access_replace(access: IommufdAccess, ioas_id: int) -> None:
    """Move to another IOAS: EINVAL when unattached; a no-op to the same IOAS; nothing
    may stay pinned (EBUSY)."""
    if access.ioas is None:
        raise KernelError(errno.EINVAL, "access not attached")
    new = access.ictx.get(ioas_id, Ioas)
    if new is access.ioas:
        return
    if access.pins:
        raise KernelError(errno.EBUSY, "pages still pinned")
    old = access.ioas
    access.detach()
    try:
        _attach(access, new)
    except KernelError:
        _attach(access, old)
        raise


def _check_range(iova: int, length: int) -> None:
    if length == 0 or iova + length - 1 > U64_MAX:
        raise KernelError(errno.EINVAL, f"range {iova:#x}+{length:#x}")


def iommufd_access_pin_pages(
    access: IommufdAccess, iova: int, length: int, *, write: bool
) -> list[tuple[MemorySource, int, int]]:
    """Pin the range; returns (memory, address, length) pieces in IOVA order. EINVAL for
    a zero or wrapping length, ENOENT where nothing is mapped, EPERM to pin a read-only
    mapping for write."""
    _check_range(iova, length)
    if access.ioas is None:
        raise KernelError(errno.ENOENT, "access not attached")
    areas = iopt_area_contig(access.ioas.iopt, iova, length)
    if write and any(not a.prot & IOMMU_IOAS_MAP_WRITEABLE for a in areas):
        raise KernelError(errno.EPERM, "read-only mapping")
    pieces = []
    last = iova + length - 1
    for a in areas:
        lo, hi = max(a.iova, iova), min(a.last, last)
        pieces.append((a.mm, a.user_va + lo - a.iova, hi - lo + 1))
        if access.internal:
            a.num_locks += 1
        else:
            a.num_accesses += 1
    access.pins.append((iova, length, areas))
    return pieces


def iommufd_access_unpin_pages(access: IommufdAccess, iova: int, length: int) -> None:
    access.unpin(iova, length)


def iommufd_access_rw(
    access: IommufdAccess, iova: int, data: bytes | int, flags: int
) -> bytes:
    """Read ``data`` bytes (an int) or write ``data`` (bytes) at ``iova``: ENOENT where
    nothing is mapped, EPERM to write a read-only mapping."""
    write = bool(flags & IOMMUFD_ACCESS_RW_WRITE)
    length = len(data) if isinstance(data, bytes) else data
    _check_range(iova, length)
    if access.ioas is None:
        raise KernelError(errno.ENOENT, "access not attached")
    areas = iopt_area_contig(access.ioas.iopt, iova, length)
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
