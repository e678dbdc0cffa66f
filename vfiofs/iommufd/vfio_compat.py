"""Mirror of drivers/iommu/iommufd/vfio_compat.c: the VFIO container ioctls served by an
iommufd (on /dev/iommu, and on /dev/vfio/vfio when VFIO_CONTAINER is off).

Differences from native type1, as the kernel has them: no DMA entry limit (DMA_AVAIL says
U32_MAX), capabilities padded to 8 bytes and argsz always overwritten, MAP_DMA accepts
flags 0 and refuses VADDR, UNMAP_DMA refuses to bisect with ENOENT, no dirty tracking.
"""

from __future__ import annotations

import errno

import attrs

from ..abi import iommufd as I, vfio as V
from ..abi._cstruct import CStruct
from ..errors import KernelError
from ..ioctl_table import ArgKind, IoctlOp, IoctlTable, Ucmd, vfio_info_cap_chain
from ..uaccess import CAP_SYS_RAWIO, Caller
from .io_pagetable import (
    iopt_disable_large_pages,
    iopt_map_user_pages,
    iopt_unmap_all,
    iopt_unmap_iova,
)
from .iommufd_private import Ioas, IommufdCtx


def compat_ioas(ictx: IommufdCtx) -> Ioas:
    """``get_compat_ioas``: ENODEV until a group brought one."""
    if ictx.compat_ioas is None:
        raise KernelError(errno.ENODEV, "no compat IOAS (attach a group first)")
    return ictx.compat_ioas


def iommufd_vfio_check_extension(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    ext = ucmd.arg
    if ext in (V.VFIO_TYPE1_IOMMU, V.VFIO_TYPE1v2_IOMMU, V.VFIO_UNMAP_ALL):
        return 1
    if ext == V.VFIO_NOIOMMU_IOMMU:
        return 1 if ictx.no_iommu_mode else 0
    if ext == V.VFIO_DMA_CC_IOMMU:
        return 1
    return 0


def iommufd_vfio_set_iommu(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    kind = ucmd.arg
    if kind == V.VFIO_NOIOMMU_IOMMU and ictx.no_iommu_mode:
        if not ucmd.caller.capable(CAP_SYS_RAWIO):
            raise KernelError(errno.EPERM, "noiommu needs CAP_SYS_RAWIO")
        ictx.compat_type = kind
        return 0
    if kind not in (V.VFIO_TYPE1_IOMMU, V.VFIO_TYPE1v2_IOMMU):
        raise KernelError(errno.EINVAL, f"type {kind}")
    ioas = compat_ioas(ictx)
    if kind == V.VFIO_TYPE1_IOMMU:
        # type1 v1 may unmap parts of a mapping: no IOPTE may span two of them
        iopt_disable_large_pages(ioas.iopt)
    ictx.compat_type = kind
    return 0


def iommufd_vfio_map_dma(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    """MAP_DMA on the compat IOAS: IOAS_MAP with a fixed IOVA (``iopt_map_user_pages``),
    so the same checks and errnos; flags 0 maps with no access at all."""
    m = ucmd.cmd
    if m.flags & ~(V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE):
        raise KernelError(errno.EINVAL, "flags (VADDR is not supported)")
    prot = (I.IOMMU_IOAS_MAP_READABLE if m.flags & V.VFIO_DMA_MAP_FLAG_READ else 0) | (
        I.IOMMU_IOAS_MAP_WRITEABLE if m.flags & V.VFIO_DMA_MAP_FLAG_WRITE else 0
    )
    ioas = compat_ioas(ictx)
    iopt_map_user_pages(ioas.iopt, ucmd.caller, m.iova, m.vaddr, m.size, prot)
    return 0


def iommufd_vfio_unmap_dma(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    """UNMAP_DMA on the compat IOAS (``iopt_unmap_iova`` / ``iopt_unmap_all``). ``size``
    is written back, failure or not, with what was unmapped."""
    u = ucmd.cmd
    if u.flags & ~V.VFIO_DMA_UNMAP_FLAG_ALL:
        raise KernelError(errno.EINVAL, "flags")
    ioas = compat_ioas(ictx)
    if u.flags & V.VFIO_DMA_UNMAP_FLAG_ALL:
        if u.iova or u.size:
            raise KernelError(errno.EINVAL, "ALL needs iova = size = 0")
        unmapped, err = iopt_unmap_all(ioas.iopt)
    else:
        unmapped, err = iopt_unmap_iova(ioas.iopt, u.iova, u.size)
    ucmd.respond(attrs.evolve(u, size=unmapped))
    if err:
        raise KernelError(err, f"unmap {u.iova:#x}+{u.size:#x}")
    return 0


def iommufd_vfio_iommu_get_info(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    info = ucmd.cmd
    ioas = compat_ioas(ictx)
    ranges = ioas.iopt.usable_ranges()
    base = V.VfioIommuType1Info.SIZE
    caps: list[CStruct | bytes] = [
        V.VfioIommuType1InfoDmaAvail(avail=0xFFFFFFFF),  # U32_MAX: no entry limit
        V.vfio_iova_range_cap(ranges),
    ]
    chain = vfio_info_cap_chain(caps, base, align=8)
    pgsizes = 0xFFFFFFFFFFFFF000
    for d in ioas.iopt.domains:
        pgsizes &= d.pgsize_bitmap
    pgsizes = max(pgsizes, ioas.iopt.iova_alignment)
    need = base + len(chain)
    cap_offset = 0
    if info.argsz >= need:
        cap_offset = base
        ucmd.copy_to(base, chain)
    flags = V.VFIO_IOMMU_INFO_PGSIZES | V.VFIO_IOMMU_INFO_CAPS
    ucmd.respond(V.VfioIommuType1Info(need, flags, pgsizes, cap_offset, 0))
    return 0


def _api_version(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    return V.VFIO_API_VERSION


COMPAT_IOCTLS: IoctlTable[IommufdCtx] = IoctlTable(
    [
        IoctlOp(
            V.VFIO_CHECK_EXTENSION,
            "VFIO_CHECK_EXTENSION",
            iommufd_vfio_check_extension,
            ArgKind.VALUE,
        ),
        IoctlOp(V.VFIO_GET_API_VERSION, "VFIO_GET_API_VERSION", _api_version),
        IoctlOp(
            V.VFIO_IOMMU_GET_INFO,
            "VFIO_IOMMU_GET_INFO",
            iommufd_vfio_iommu_get_info,
            ArgKind.ARGSZ,
            V.VfioIommuType1Info,
            "iova_pgsizes",
        ),
        IoctlOp(
            V.VFIO_IOMMU_MAP_DMA,
            "VFIO_IOMMU_MAP_DMA",
            iommufd_vfio_map_dma,
            ArgKind.ARGSZ,
            V.VfioIommuType1DmaMap,
            "size",
        ),
        IoctlOp(
            V.VFIO_IOMMU_UNMAP_DMA,
            "VFIO_IOMMU_UNMAP_DMA",
            iommufd_vfio_unmap_dma,
            ArgKind.ARGSZ,
            V.VfioIommuType1DmaUnmap,
            "size",
        ),
        IoctlOp(
            V.VFIO_SET_IOMMU, "VFIO_SET_IOMMU", iommufd_vfio_set_iommu, ArgKind.VALUE
        ),
    ]
)


def iommufd_vfio_ioctl(ictx: IommufdCtx, caller: Caller, cmd: int, arg: int) -> int:
    """Everything outside iommufd's own table: the VFIO container commands, else ENOTTY."""
    return COMPAT_IOCTLS.dispatch(ictx, caller, cmd, arg)
