"""Mirror of drivers/iommu/iommufd/main.c: one open /dev/iommu (``struct iommufd_ctx``),
its object table and the ioctl table (``iommufd_ioctl_ops``).

Object ids are the lowest free id from 1, reused after destroy. A lookup of a missing id
or of the wrong type is ENOENT. A command number outside the table goes to the VFIO
container compatibility layer (vfio_compat.py), as the kernel's ``iommufd_fops_ioctl``
does.
"""

from __future__ import annotations

import errno
from typing import Any, TypeVar

import attrs

from ..abi import iommufd as I
from ..errors import KernelError
from ..ioctl_table import ArgKind, IoctlOp, IoctlTable, Ucmd
from ..uaccess import Caller

T = TypeVar("T")


@attrs.define(eq=False)
class IommufdObject:
    """Base of IOAS, HWPT and DEVICE objects. ``users`` counts references from other
    objects and drivers: a referenced object cannot be destroyed (EBUSY)."""

    ictx: IommufdCtx
    id: int = 0
    users: int = 0

    def destroy(self) -> None:
        """Free what the object holds (called once, when it leaves the table)."""


@attrs.define(eq=False)
class IommufdCtx:
    """An open /dev/iommu (or /dev/vfio/vfio served by iommufd)."""

    address_width: int = 48
    account_mm: bool = False  # IOMMU_OPTION_RLIMIT_MODE: 1 = per process (VFIO-like)
    objects: dict[int, IommufdObject] = attrs.Factory(dict)
    compat_ioas: Any = None  # the IOAS the VFIO compat layer uses
    compat_type: int = 0  # SET_IOMMU's type, 0 before
    no_iommu_mode: bool = False
    closed: bool = False
    devices_bound: int = 0  # files that keep the context (device fds, eventq fds)
    iommufd_test: bool = False  # CONFIG_IOMMUFD_TEST: IOMMU_TEST_CMD is served
    selftest: Any = None  # the mock driver's per-context state (selftest.py)

    # --- objects -------------------------------------------------------------------------

    def add(self, obj: IommufdObject) -> int:
        """``iommufd_object_alloc`` + finalize: the lowest free id from 1."""
        i = 1
        while i in self.objects:
            i += 1
        obj.id = i
        self.objects[i] = obj
        return i

    def get(self, obj_id: int, kind: type[T]) -> T:
        """``iommufd_get_object``: ENOENT for a missing id or the wrong type."""
        obj = self.objects.get(obj_id)
        if not isinstance(obj, kind):
            raise KernelError(errno.ENOENT, f"no {kind.__name__} with id {obj_id}")
        return obj

    def remove(self, obj: IommufdObject) -> None:
        if self.objects.get(obj.id) is obj:
            del self.objects[obj.id]
            obj.destroy()

    # --- file operations -------------------------------------------------------------------

    def ioctl_name(self, cmd: int) -> str | None:
        from .vfio_compat import COMPAT_IOCTLS

        if cmd == TEST_CMD and self.iommufd_test:
            return TEST_OP.name
        return IOCTLS.name(cmd) or COMPAT_IOCTLS.name(cmd)

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        op = IOCTLS.ops.get(cmd)
        if op is None and cmd == TEST_CMD and self.iommufd_test:
            op = TEST_OP
        if op is None:
            from .vfio_compat import iommufd_vfio_ioctl

            return iommufd_vfio_ioctl(self, caller, cmd, arg)
        return IOCTLS.call(op, self, caller, arg)

    def release(self) -> None:
        """Close: destroy every object, leaves first. Bound devices keep the context alive
        until their device fds close (then `unbound` finishes the job)."""
        self.closed = True
        self._destroy_unreferenced()

    def file_opened(self) -> None:
        """A file (a bound device fd, a FAULT or vEVENTQ fd) takes a reference on
        the context (``iommufd_ctx_get``)."""
        self.devices_bound += 1

    def file_closed(self) -> None:
        """Such a file let go of this context (``iommufd_ctx_put``)."""
        self.devices_bound -= 1
        if self.closed:
            self._destroy_unreferenced()

    unbound = file_closed

    def _destroy_unreferenced(self) -> None:
        progress = True
        while progress:
            progress = False
            for obj in sorted(self.objects.values(), key=lambda o: -o.id):
                if obj.users == 0 and not getattr(obj, "bound", False):
                    self.remove(obj)
                    progress = True
        if not self.objects:
            self.compat_ioas = None


def iommufd_destroy(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    obj = ictx.objects.get(ucmd.cmd.id)
    if obj is None:
        raise KernelError(errno.ENOENT, f"no object {ucmd.cmd.id}")
    if obj.users or getattr(obj, "bound", False):
        raise KernelError(errno.EBUSY, f"object {obj.id} is in use")
    if obj is ictx.compat_ioas:
        ictx.compat_ioas = None
    ictx.remove(obj)
    return 0


def iommufd_option(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    from .ioas import Ioas

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
            from ..uaccess import CAP_SYS_RESOURCE

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


def _table() -> IoctlTable[IommufdCtx]:
    """main.c's ``iommufd_ioctl_ops``, sorted by name as there."""
    from . import ioas as A
    from .device import iommufd_get_hw_info
    from .eventq import iommufd_fault_alloc, iommufd_veventq_alloc
    from .hw_pagetable import (
        iommufd_hwpt_alloc,
        iommufd_hwpt_get_dirty_bitmap,
        iommufd_hwpt_invalidate,
        iommufd_hwpt_set_dirty_tracking,
    )
    from .viommu import (
        iommufd_hw_queue_alloc_ioctl,
        iommufd_vdevice_alloc_ioctl,
        iommufd_viommu_alloc_ioctl,
    )

    def op(cmd: int, name: str, fn: Any, st: Any, last: str) -> IoctlOp[IommufdCtx]:
        return IoctlOp(cmd, name, fn, ArgKind.SIZE, st, last)

    return IoctlTable(
        [
            op(I.IOMMU_DESTROY, "IOMMU_DESTROY", iommufd_destroy, I.IommuDestroy, "id"),
            op(
                I.IOMMU_FAULT_QUEUE_ALLOC,
                "IOMMU_FAULT_QUEUE_ALLOC",
                iommufd_fault_alloc,
                I.IommuFaultAlloc,
                "out_fault_fd",
            ),
            op(
                I.IOMMU_GET_HW_INFO,
                "IOMMU_GET_HW_INFO",
                iommufd_get_hw_info,
                I.IommuHwInfo,
                "reserved",
            ),
            op(
                I.IOMMU_HW_QUEUE_ALLOC,
                "IOMMU_HW_QUEUE_ALLOC",
                iommufd_hw_queue_alloc_ioctl,
                I.IommuHwQueueAlloc,
                "length",
            ),
            op(
                I.IOMMU_HWPT_ALLOC,
                "IOMMU_HWPT_ALLOC",
                iommufd_hwpt_alloc,
                I.IommuHwptAlloc,
                "reserved",
            ),
            op(
                I.IOMMU_HWPT_GET_DIRTY_BITMAP,
                "IOMMU_HWPT_GET_DIRTY_BITMAP",
                iommufd_hwpt_get_dirty_bitmap,
                I.IommuHwptGetDirtyBitmap,
                "data",
            ),
            op(
                I.IOMMU_HWPT_INVALIDATE,
                "IOMMU_HWPT_INVALIDATE",
                iommufd_hwpt_invalidate,
                I.IommuHwptInvalidate,
                "reserved",
            ),
            op(
                I.IOMMU_HWPT_SET_DIRTY_TRACKING,
                "IOMMU_HWPT_SET_DIRTY_TRACKING",
                iommufd_hwpt_set_dirty_tracking,
                I.IommuHwptSetDirtyTracking,
                "reserved",
            ),
            op(
                I.IOMMU_IOAS_ALLOC,
                "IOMMU_IOAS_ALLOC",
                A.iommufd_ioas_alloc_ioctl,
                I.IommuIoasAlloc,
                "out_ioas_id",
            ),
            op(
                I.IOMMU_IOAS_ALLOW_IOVAS,
                "IOMMU_IOAS_ALLOW_IOVAS",
                A.iommufd_ioas_allow_iovas,
                I.IommuIoasAllowIovas,
                "allowed_iovas",
            ),
            op(
                I.IOMMU_IOAS_CHANGE_PROCESS,
                "IOMMU_IOAS_CHANGE_PROCESS",
                A.iommufd_ioas_change_process,
                I.IommuIoasChangeProcess,
                "reserved",
            ),
            op(
                I.IOMMU_IOAS_COPY,
                "IOMMU_IOAS_COPY",
                A.iommufd_ioas_copy,
                I.IommuIoasCopy,
                "src_iova",
            ),
            op(
                I.IOMMU_IOAS_IOVA_RANGES,
                "IOMMU_IOAS_IOVA_RANGES",
                A.iommufd_ioas_iova_ranges,
                I.IommuIoasIovaRanges,
                "out_iova_alignment",
            ),
            op(
                I.IOMMU_IOAS_MAP,
                "IOMMU_IOAS_MAP",
                A.iommufd_ioas_map,
                I.IommuIoasMap,
                "iova",
            ),
            op(
                I.IOMMU_IOAS_MAP_FILE,
                "IOMMU_IOAS_MAP_FILE",
                A.iommufd_ioas_map_file,
                I.IommuIoasMapFile,
                "iova",
            ),
            op(
                I.IOMMU_IOAS_UNMAP,
                "IOMMU_IOAS_UNMAP",
                A.iommufd_ioas_unmap,
                I.IommuIoasUnmap,
                "length",
            ),
            op(I.IOMMU_OPTION, "IOMMU_OPTION", iommufd_option, I.IommuOption, "val64"),
            op(
                I.IOMMU_VDEVICE_ALLOC,
                "IOMMU_VDEVICE_ALLOC",
                iommufd_vdevice_alloc_ioctl,
                I.IommuVdeviceAlloc,
                "virt_id",
            ),
            op(
                I.IOMMU_VEVENTQ_ALLOC,
                "IOMMU_VEVENTQ_ALLOC",
                iommufd_veventq_alloc,
                I.IommuVeventqAlloc,
                "out_veventq_fd",
            ),
            op(
                I.IOMMU_VFIO_IOAS,
                "IOMMU_VFIO_IOAS",
                A.iommufd_vfio_ioas,
                I.IommuVfioIoas,
                "reserved",
            ),
            op(
                I.IOMMU_VIOMMU_ALLOC,
                "IOMMU_VIOMMU_ALLOC",
                iommufd_viommu_alloc_ioctl,
                I.IommuViommuAlloc,
                "out_viommu_id",
            ),
        ]
    )


def _test_op() -> IoctlOp[IommufdCtx]:
    """IOMMU_TEST_CMD: in the table only where CONFIG_IOMMUFD_TEST is (the topology's
    ``iommufd_test = true``); elsewhere the number is unknown (ENOTTY)."""
    from ..abi import iommufd_test as T
    from .selftest import iommufd_test

    return IoctlOp(
        T.IOMMU_TEST_CMD,
        "IOMMU_TEST_CMD",
        iommufd_test,
        ArgKind.SIZE,
        T.IommuTestCmd,
        "last",
    )


IOCTLS: IoctlTable[IommufdCtx] = _table()  # after the classes: the handlers import them
TEST_OP: IoctlOp[IommufdCtx] = _test_op()
TEST_CMD: int = TEST_OP.cmd
