"""Mirror of drivers/iommu/iommufd/ioas.c: the IOAS ioctls (the struct is in
iommufd_private.py)."""

from __future__ import annotations

import errno
import struct

import attrs

from ..abi import iommufd as I
from ..errors import KernelError
from ..ioctl_table import Ucmd
from ..uaccess import FileMemory, ForeignFile, OurFile, account_locked_vm
from .io_pagetable import (
    U64_MAX,
    iopt_get_pages,
    iopt_map_file_pages,
    iopt_map_pages,
    iopt_map_user_pages,
    iopt_unmap_all,
    iopt_unmap_iova,
)
from .iommufd_private import DmaBuf, Ioas, IommufdCtx

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
    # iopt_get_pages(): the piece of every source area, sharing its pages (and so its
    # account mode)
    pieces = iopt_get_pages(src.iopt, c.src_iova, c.length)
    dst = ictx.get(c.dst_ioas_id, Ioas)
    fixed = c.flags & I.IOMMU_IOAS_MAP_FIXED_IOVA
    iova = iopt_map_pages(dst.iopt, c.dst_iova if fixed else None, pieces, c.flags & RW)
    ucmd.respond(attrs.evolve(c, dst_iova=iova))
    return 0


def iommufd_ioas_unmap(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    ioas = ictx.get(c.ioas_id, Ioas)
    if c.iova == 0 and c.length == U64_MAX:
        unmapped, err = iopt_unmap_all(ioas.iopt)
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


def iommufd_ioas_map_file(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    """IOAS_MAP_FILE: map ``length`` bytes of the caller's memfd from ``start``. The
    daemon maps its own duplicate of the file (pidfd_getfd), so device DMA reads and
    writes the file's pages; a test dma-buf (IOMMU_TEST_OP_DMABUF_GET) maps its memory.
    Checks and placement are IOAS_MAP's (``iopt_map_file_pages``)."""
    c = ucmd.cmd
    if c.iova >= U64_MAX or c.length >= U64_MAX:
        raise KernelError(errno.EOVERFLOW, "iova or length")
    if c.flags & ~(I.IOMMU_IOAS_MAP_FIXED_IOVA | RW):
        raise KernelError(errno.EOPNOTSUPP, "flags")
    if not c.flags & RW:
        raise KernelError(errno.EINVAL, "neither READABLE nor WRITEABLE")
    ioas = ictx.get(c.ioas_id, Ioas)
    if c.fd < 0:
        raise KernelError(errno.EBADF, f"fd {c.fd}")
    ref = ucmd.caller.fget(c.fd)  # before any state changes (NeedFds)
    mem: FileMemory
    owned = dmabuf = False
    if isinstance(ref, OurFile) and isinstance(ref.handle, DmaBuf):
        mem, dmabuf = ref.handle.mem, True  # the dma-buf owns its memory
    elif isinstance(ref, ForeignFile) and ref.kind == "file":
        mem, owned = ref.take_file(), True
    else:
        raise KernelError(errno.EBADF, f"fd {c.fd} is not a memfd or regular file")
    fixed = c.flags & I.IOMMU_IOAS_MAP_FIXED_IOVA
    try:
        iova = iopt_map_file_pages(
            ioas.iopt,
            ucmd.caller,
            c.iova if fixed else None,
            mem,
            c.start,
            c.length,
            c.flags & RW,
            dmabuf=dmabuf,
        )
    except KernelError:
        if owned and not mem.areas:
            mem.close()
        raise
    ucmd.respond(attrs.evolve(c, iova=iova))
    return 0


def iommufd_ioas_change_process(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    """IOAS_CHANGE_PROCESS: every area of every IOAS must map a file (EINVAL
    otherwise); the pinned pages are charged to the caller instead, all or nothing
    (ENOMEM past the caller's RLIMIT_MEMLOCK). Uncharged pages (a mapper with
    CAP_IPC_LOCK) stay uncharged."""
    c = ucmd.cmd
    if c.reserved:
        raise KernelError(errno.EOPNOTSUPP, "reserved")
    new = ucmd.caller.mm
    areas = [(a, ioas) for ioas in ictx.ioases() for a in ioas.iopt.areas]
    if any(a.file is None for a, _ in areas):
        raise KernelError(errno.EINVAL, "a mapping is not from IOAS_MAP_FILE")
    moving = [
        (a, bool(ioas.iopt.domains))
        for a, ioas in areas
        if a.acct is not None and a.acct is not new
    ]
    charge = sum(a.length for a, pinned in moving if pinned)
    if charge:
        account_locked_vm(new, charge)  # ENOMEM: nothing moved
    for a, pinned in moving:
        assert a.acct is not None
        if pinned:
            account_locked_vm(a.acct, a.length, inc=False)
        a.acct = new
    return 0
