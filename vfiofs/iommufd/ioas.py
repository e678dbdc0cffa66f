"""Mirror of drivers/iommu/iommufd/ioas.c: the IOAS ioctls (the struct is in
iommufd_private.py)."""

from __future__ import annotations

import errno
import struct

import attrs

from ..abi import iommufd as I
from ..errors import KernelError
from ..ioctl_table import Ucmd
from .io_pagetable import (
    U64_MAX,
    IoptPages,
    iopt_alloc_area,
    iopt_fill_domains,
    iopt_map_user_pages,
    iopt_unmap_all,
    iopt_unmap_iova,
)
from .iommufd_private import Ioas, IommufdCtx

RW = I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE


def iommufd_ioas_alloc(ictx: IommufdCtx) -> Ioas:
    ioas = Ioas(ictx)
    ictx.add(ioas)
    return ioas


def iommufd_ioas_alloc_ioctl(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    if ucmd.cmd.flags:
        raise KernelError(errno.EOPNOTSUPP, "flags")
    ioas = iommufd_ioas_alloc(ictx)
    ucmd.respond(attrs.evolve(ucmd.cmd, out_ioas_id=ioas.id))
    return 0


def iommufd_ioas_iova_ranges(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    if c.reserved:
        raise KernelError(errno.EOPNOTSUPP, "reserved")
    ioas = ictx.get(c.ioas_id, Ioas)
    ranges = ioas.iopt.usable_ranges()
    room = c.num_iovas
    data = b"".join(I.IommuIovaRange(lo, hi).pack() for lo, hi in ranges[:room])
    if data:
        ucmd.caller.copy_to_user(c.allowed_iovas, data)
    ucmd.respond(
        attrs.evolve(
            c,
            num_iovas=len(ranges),
            out_iova_alignment=max(ioas.iopt.iova_alignment, 1),
        )
    )
    if len(ranges) > room:
        raise KernelError(errno.EMSGSIZE, f"{len(ranges)} ranges, room for {room}")
    return 0


def iommufd_ioas_allow_iovas(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    if c.reserved:
        raise KernelError(errno.EOPNOTSUPP, "reserved")
    ioas = ictx.get(c.ioas_id, Ioas)
    raw = (
        ucmd.caller.copy_from_user(c.allowed_iovas, c.num_iovas * 16)
        if c.num_iovas
        else b""
    )
    ranges = sorted(struct.unpack_from("<QQ", raw, 16 * i) for i in range(c.num_iovas))
    for i, (lo, hi) in enumerate(ranges):
        if lo >= hi:
            raise KernelError(errno.EINVAL, f"range {lo:#x}-{hi:#x}")
        if i and lo <= ranges[i - 1][1]:
            raise KernelError(errno.EINVAL, "overlapping ranges")
        if ioas.iopt.hits_reserved(lo, hi):
            raise KernelError(errno.EADDRINUSE, "a range overlaps a reserved IOVA")
    ioas.iopt.allowed = ranges or None
    return 0


def iommufd_ioas_map(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    if c.flags & ~(I.IOMMU_IOAS_MAP_FIXED_IOVA | RW) or c.reserved:
        raise KernelError(errno.EOPNOTSUPP, "flags or reserved")
    if c.iova >= U64_MAX or c.length >= U64_MAX:
        raise KernelError(errno.EOVERFLOW, "iova or length")
    if not c.flags & RW:
        raise KernelError(errno.EINVAL, "neither READABLE nor WRITEABLE")
    ioas = ictx.get(c.ioas_id, Ioas)
    fixed = c.flags & I.IOMMU_IOAS_MAP_FIXED_IOVA
    iova = iopt_map_user_pages(
        ioas.iopt,
        ucmd.caller,
        c.iova if fixed else None,
        c.user_va,
        c.length,
        c.flags & RW,
    )
    ucmd.respond(attrs.evolve(c, iova=iova))
    return 0


def iommufd_ioas_copy(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    if c.flags & ~(I.IOMMU_IOAS_MAP_FIXED_IOVA | RW):
        raise KernelError(errno.EOPNOTSUPP, "flags")
    if c.length >= U64_MAX or c.src_iova >= U64_MAX or c.dst_iova >= U64_MAX:
        raise KernelError(errno.EOVERFLOW, "length or iova")
    if not c.flags & RW:
        raise KernelError(errno.EINVAL, "neither READABLE nor WRITEABLE")
    if c.length == 0:
        raise KernelError(errno.EINVAL, "length 0")
    src = ictx.get(c.src_ioas_id, Ioas)
    last = c.src_iova + c.length - 1
    areas = src.iopt.overlapping(c.src_iova, last)
    covered = c.src_iova
    for a in areas:
        if a.iova > covered:
            break
        covered = a.last + 1
    if not areas or covered <= last:
        raise KernelError(errno.ENOENT, "source range is not entirely mapped")
    # iopt_get_pages(): the piece of every source area, sharing its pages (and so its
    # account mode)
    pieces = []
    for a in areas:
        lo, hi = max(a.iova, c.src_iova), min(a.last, last)
        pieces.append(
            IoptPages(a.mm, a.user_va + (lo - a.iova), hi - lo + 1, a.account)
        )
    dst = ictx.get(c.dst_ioas_id, Ioas)
    fixed = c.flags & I.IOMMU_IOAS_MAP_FIXED_IOVA
    iova = iopt_alloc_area(dst.iopt, c.dst_iova if fixed else None, pieces)
    iopt_fill_domains(dst.iopt, iova, pieces, c.flags & RW)
    ucmd.respond(attrs.evolve(c, dst_iova=iova))
    return 0


def iommufd_ioas_unmap(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    ioas = ictx.get(c.ioas_id, Ioas)
    if c.iova == 0 and c.length == U64_MAX:
        unmapped = iopt_unmap_all(ioas.iopt)
    else:
        if c.iova >= U64_MAX or c.length >= U64_MAX:
            raise KernelError(errno.EOVERFLOW, "iova or length")
        unmapped, err = iopt_unmap_iova(ioas.iopt, c.iova, c.length)
        if err:
            raise KernelError(err, f"unmap {c.iova:#x}+{c.length:#x}")
    ucmd.respond(attrs.evolve(c, length=unmapped))
    return 0


def iommufd_vfio_ioas(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    if c.reserved:
        raise KernelError(errno.EOPNOTSUPP, "reserved")
    if c.op == I.IOMMU_VFIO_IOAS_GET:
        if ictx.compat_ioas is None:
            raise KernelError(errno.ENODEV, "no compat IOAS")
        ucmd.respond(attrs.evolve(c, ioas_id=ictx.compat_ioas.id))
        return 0
    if c.op == I.IOMMU_VFIO_IOAS_SET:
        ictx.compat_ioas = ictx.get(c.ioas_id, Ioas)
        return 0
    if c.op == I.IOMMU_VFIO_IOAS_CLEAR:
        ictx.compat_ioas = None
        return 0
    raise KernelError(errno.EOPNOTSUPP, f"op {c.op}")
