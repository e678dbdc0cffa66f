"""Mirror of drivers/iommu/iommufd/main.c: the ioctl table (``iommufd_ioctl_ops``), the
file operations of /dev/iommu and the object-level ioctls (DESTROY, OPTION).

A command number outside the table goes to the VFIO container compatibility layer
(vfio_compat.py), as the kernel's ``iommufd_fops_ioctl`` does. This module imports the
handler modules; they import only iommufd_private.py.
"""

from __future__ import annotations

import errno

import attrs

from ..abi import iommufd as I
from ..abi._cstruct import CStruct
from ..errors import KernelError
from ..ioctl_table import ArgKind, FileOperations, Handler, IoctlOp, IoctlTable, Ucmd
from ..uaccess import CAP_SYS_RESOURCE, Caller
from .device import iommufd_get_hw_info
from .hw_pagetable import iommufd_hwpt_alloc
from .ioas import (
    iommufd_ioas_alloc_ioctl,
    iommufd_ioas_allow_iovas,
    iommufd_ioas_copy,
    iommufd_ioas_iova_ranges,
    iommufd_ioas_map,
    iommufd_ioas_unmap,
    iommufd_vfio_ioas,
)
from .iommufd_private import Ioas, IommufdCtx, IommufdObject
from .vfio_compat import COMPAT_IOCTLS, iommufd_vfio_ioctl


def iommufd_destroy(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    obj = ictx.get(ucmd.cmd.id, IommufdObject)  # ENOENT
    if obj.busy():
        raise KernelError(errno.EBUSY, f"object {obj.id} is in use")
    if ictx.compat_ioas is obj:
        ictx.compat_ioas = None
    ictx.remove(obj)
    return 0


def iommufd_option(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    o = ucmd.cmd
    if o.reserved:
        raise KernelError(errno.EOPNOTSUPP, "reserved")
    if o.op not in (I.IOMMU_OPTION_OP_SET, I.IOMMU_OPTION_OP_GET):
        raise KernelError(errno.EOPNOTSUPP, "op")
    val = o.val64
    if o.option_id == I.IOMMU_OPTION_RLIMIT_MODE:
        if o.object_id:
            raise KernelError(errno.EOPNOTSUPP, "RLIMIT_MODE is global")
        if o.op == I.IOMMU_OPTION_OP_GET:
            val = int(ictx.account_mm)
        else:
            if not ucmd.caller.capable(CAP_SYS_RESOURCE):
                raise KernelError(errno.EPERM, "needs CAP_SYS_RESOURCE")
            if ictx.objects:
                raise KernelError(errno.EBUSY, "the context holds objects")
            if val > 1:
                raise KernelError(errno.EINVAL, "val64")
            ictx.account_mm = bool(val)
    elif o.option_id == I.IOMMU_OPTION_HUGE_PAGES:
        ioas = ictx.get(o.object_id, Ioas)
        if o.op == I.IOMMU_OPTION_OP_GET:
            val = int(ioas.iopt.huge_pages)
        else:
            if val > 1:
                raise KernelError(errno.EINVAL, "val64")
            if not val and ioas.iopt.domains and ioas.iopt.areas:
                raise KernelError(errno.EINVAL, "domains already hold mappings")
            ioas.iopt.huge_pages = bool(val)
    else:
        raise KernelError(errno.EOPNOTSUPP, f"option {o.option_id}")
    ucmd.respond(attrs.evolve(o, val64=val))
    return 0


def _op(
    cmd: int, name: str, fn: Handler[IommufdCtx], st: type[CStruct], last: str
) -> IoctlOp[IommufdCtx]:
    return IoctlOp(cmd, name, fn, ArgKind.SIZE, st, last)


IOCTLS: IoctlTable[IommufdCtx] = IoctlTable(
    [
        _op(I.IOMMU_DESTROY, "IOMMU_DESTROY", iommufd_destroy, I.IommuDestroy, "id"),
        _op(
            I.IOMMU_GET_HW_INFO,
            "IOMMU_GET_HW_INFO",
            iommufd_get_hw_info,
            I.IommuHwInfo,
            "reserved",
        ),
        _op(
            I.IOMMU_HWPT_ALLOC,
            "IOMMU_HWPT_ALLOC",
            iommufd_hwpt_alloc,
            I.IommuHwptAlloc,
            "reserved",
        ),
        _op(
            I.IOMMU_IOAS_ALLOC,
            "IOMMU_IOAS_ALLOC",
            iommufd_ioas_alloc_ioctl,
            I.IommuIoasAlloc,
            "out_ioas_id",
        ),
        _op(
            I.IOMMU_IOAS_ALLOW_IOVAS,
            "IOMMU_IOAS_ALLOW_IOVAS",
            iommufd_ioas_allow_iovas,
            I.IommuIoasAllowIovas,
            "allowed_iovas",
        ),
        _op(
            I.IOMMU_IOAS_COPY,
            "IOMMU_IOAS_COPY",
            iommufd_ioas_copy,
            I.IommuIoasCopy,
            "src_iova",
        ),
        _op(
            I.IOMMU_IOAS_IOVA_RANGES,
            "IOMMU_IOAS_IOVA_RANGES",
            iommufd_ioas_iova_ranges,
            I.IommuIoasIovaRanges,
            "out_iova_alignment",
        ),
        _op(
            I.IOMMU_IOAS_MAP, "IOMMU_IOAS_MAP", iommufd_ioas_map, I.IommuIoasMap, "iova"
        ),
        _op(
            I.IOMMU_IOAS_UNMAP,
            "IOMMU_IOAS_UNMAP",
            iommufd_ioas_unmap,
            I.IommuIoasUnmap,
            "length",
        ),
        _op(I.IOMMU_OPTION, "IOMMU_OPTION", iommufd_option, I.IommuOption, "val64"),
        _op(
            I.IOMMU_VFIO_IOAS,
            "IOMMU_VFIO_IOAS",
            iommufd_vfio_ioas,
            I.IommuVfioIoas,
            "reserved",
        ),
    ]
)


def iommufd_fops_ioctl(ictx: IommufdCtx, caller: Caller, cmd: int, arg: int) -> int:
    """Our table first; anything else is a VFIO container command (or ENOTTY)."""
    op = IOCTLS.ops.get(cmd)
    if op is None:
        return iommufd_vfio_ioctl(ictx, caller, cmd, arg)
    return IOCTLS.call(op, ictx, caller, arg)


def iommufd_fops_ioctl_name(ictx: IommufdCtx, cmd: int) -> str | None:
    return IOCTLS.name(cmd) or COMPAT_IOCTLS.name(cmd)


IOMMUFD_FOPS: FileOperations[IommufdCtx] = FileOperations(
    iommufd_fops_ioctl, iommufd_fops_ioctl_name
)


def iommufd_fops_open(address_width: int = 48) -> IommufdCtx:
    """open(/dev/iommu): a new, empty context."""
    return IommufdCtx(IOMMUFD_FOPS, address_width=address_width)
