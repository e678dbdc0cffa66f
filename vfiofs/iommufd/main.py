"""Mirror of drivers/iommu/iommufd/main.c: the ioctl table (``iommufd_ioctl_ops``), the
file operations of /dev/iommu and the object-level ioctls (DESTROY, OPTION).

A command number outside the table goes to the VFIO container compatibility layer
(vfio_compat.py), as the kernel's ``iommufd_fops_ioctl`` does. This module imports the
handler modules; they import only iommufd_private.py.
"""

from __future__ import annotations

import errno

import attrs

from ..abi import iommufd as I, iommufd_test as T
from ..abi._cstruct import CStruct
from ..errors import KernelError
from ..ioctl_table import ArgKind, FileOperations, Handler, IoctlOp, IoctlTable, Ucmd
from ..uaccess import CAP_SYS_RESOURCE, Caller
from .device import iommufd_get_hw_info
from .eventq import iommufd_fault_alloc, iommufd_veventq_alloc
from .hw_pagetable import (
    iommufd_hwpt_alloc,
    iommufd_hwpt_get_dirty_bitmap,
    iommufd_hwpt_invalidate,
    iommufd_hwpt_set_dirty_tracking,
)
from .io_pagetable import iopt_disable_large_pages, iopt_enable_large_pages
from .ioas import (
    iommufd_ioas_alloc_ioctl,
    iommufd_ioas_allow_iovas,
    iommufd_ioas_change_process,
    iommufd_ioas_copy,
    iommufd_ioas_iova_ranges,
    iommufd_ioas_map,
    iommufd_ioas_map_file,
    iommufd_ioas_unmap,
    iommufd_vfio_ioas,
)
from .iommufd_private import Ioas, IommufdCtx, IommufdObject, IommufdTest
from .selftest import iommufd_test
from .vfio_compat import COMPAT_IOCTLS, iommufd_vfio_ioctl
from .viommu import (
    iommufd_hw_queue_alloc_ioctl,
    iommufd_vdevice_alloc_ioctl,
    iommufd_viommu_alloc_ioctl,
)


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
            if val:
                iopt_enable_large_pages(ioas.iopt)
            else:
                iopt_disable_large_pages(ioas.iopt)  # EINVAL, EADDRINUSE
    else:
        raise KernelError(errno.EOPNOTSUPP, f"option {o.option_id}")
    ucmd.respond(attrs.evolve(o, val64=val))
    return 0


def _op(
    cmd: int, name: str, fn: Handler[IommufdCtx], st: type[CStruct], last: str
) -> IoctlOp[IommufdCtx]:
    return IoctlOp(cmd, name, fn, ArgKind.SIZE, st, last)


IOCTLS: IoctlTable[IommufdCtx] = IoctlTable(
    [  # main.c's iommufd_ioctl_ops, in its order (by name, word by word)
        _op(I.IOMMU_DESTROY, "IOMMU_DESTROY", iommufd_destroy, I.IommuDestroy, "id"),
        _op(
            I.IOMMU_FAULT_QUEUE_ALLOC,
            "IOMMU_FAULT_QUEUE_ALLOC",
            iommufd_fault_alloc,
            I.IommuFaultAlloc,
            "out_fault_fd",
        ),
        _op(
            I.IOMMU_GET_HW_INFO,
            "IOMMU_GET_HW_INFO",
            iommufd_get_hw_info,
            I.IommuHwInfo,
            "reserved",
        ),
        _op(
            I.IOMMU_HW_QUEUE_ALLOC,
            "IOMMU_HW_QUEUE_ALLOC",
            iommufd_hw_queue_alloc_ioctl,
            I.IommuHwQueueAlloc,
            "length",
        ),
        _op(
            I.IOMMU_HWPT_ALLOC,
            "IOMMU_HWPT_ALLOC",
            iommufd_hwpt_alloc,
            I.IommuHwptAlloc,
            "reserved",
        ),
        _op(
            I.IOMMU_HWPT_GET_DIRTY_BITMAP,
            "IOMMU_HWPT_GET_DIRTY_BITMAP",
            iommufd_hwpt_get_dirty_bitmap,
            I.IommuHwptGetDirtyBitmap,
            "data",
        ),
        _op(
            I.IOMMU_HWPT_INVALIDATE,
            "IOMMU_HWPT_INVALIDATE",
            iommufd_hwpt_invalidate,
            I.IommuHwptInvalidate,
            "reserved",
        ),
        _op(
            I.IOMMU_HWPT_SET_DIRTY_TRACKING,
            "IOMMU_HWPT_SET_DIRTY_TRACKING",
            iommufd_hwpt_set_dirty_tracking,
            I.IommuHwptSetDirtyTracking,
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
            I.IOMMU_IOAS_CHANGE_PROCESS,
            "IOMMU_IOAS_CHANGE_PROCESS",
            iommufd_ioas_change_process,
            I.IommuIoasChangeProcess,
            "reserved",
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
            I.IOMMU_IOAS_MAP_FILE,
            "IOMMU_IOAS_MAP_FILE",
            iommufd_ioas_map_file,
            I.IommuIoasMapFile,
            "iova",
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
            I.IOMMU_VDEVICE_ALLOC,
            "IOMMU_VDEVICE_ALLOC",
            iommufd_vdevice_alloc_ioctl,
            I.IommuVdeviceAlloc,
            "virt_id",
        ),
        _op(
            I.IOMMU_VEVENTQ_ALLOC,
            "IOMMU_VEVENTQ_ALLOC",
            iommufd_veventq_alloc,
            I.IommuVeventqAlloc,
            "out_veventq_fd",
        ),
        _op(
            I.IOMMU_VFIO_IOAS,
            "IOMMU_VFIO_IOAS",
            iommufd_vfio_ioas,
            I.IommuVfioIoas,
            "reserved",
        ),
        _op(
            I.IOMMU_VIOMMU_ALLOC,
            "IOMMU_VIOMMU_ALLOC",
            iommufd_viommu_alloc_ioctl,
            I.IommuViommuAlloc,
            "out_viommu_id",
        ),
    ]
)

TEST_IOCTLS: IoctlTable[IommufdCtx] = IoctlTable(
    # CONFIG_IOMMUFD_TEST adds IOMMU_TEST_CMD to the table; without it (a context
    # with no ``test``) the number is unknown: ENOTTY, as any other
    [_op(T.IOMMU_TEST_CMD, "IOMMU_TEST_CMD", iommufd_test, T.IommuTestCmd, "last")]
)


def _lookup(
    ictx: IommufdCtx, cmd: int
) -> tuple[IoctlTable[IommufdCtx], IoctlOp[IommufdCtx]] | None:
    op = IOCTLS.ops.get(cmd)
    if op is not None:
        return IOCTLS, op
    op = TEST_IOCTLS.ops.get(cmd) if ictx.test is not None else None
    return (TEST_IOCTLS, op) if op is not None else None


def iommufd_fops_ioctl(ictx: IommufdCtx, caller: Caller, cmd: int, arg: int) -> int:
    """Our table first; anything else is a VFIO container command (or ENOTTY)."""
    found = _lookup(ictx, cmd)
    if found is None:
        return iommufd_vfio_ioctl(ictx, caller, cmd, arg)
    table, op = found
    return table.call(op, ictx, caller, arg)


def iommufd_fops_ioctl_name(ictx: IommufdCtx, cmd: int) -> str | None:
    found = _lookup(ictx, cmd)
    return found[1].name if found is not None else COMPAT_IOCTLS.name(cmd)


IOMMUFD_FOPS: FileOperations[IommufdCtx] = FileOperations(
    iommufd_fops_ioctl, iommufd_fops_ioctl_name
)


def iommufd_fops_open(
    address_width: int = 48, *, test: IommufdTest | None = None
) -> IommufdCtx:
    """open(/dev/iommu): a new, empty context. ``test`` is the daemon's
    CONFIG_IOMMUFD_TEST state, None where IOMMU_TEST_CMD is not served."""
    return IommufdCtx(IOMMUFD_FOPS, address_width=address_width, test=test)
