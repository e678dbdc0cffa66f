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
from ..idr import ida_alloc_min
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
    devices_bound: int = 0

    # --- objects -------------------------------------------------------------------------

    def add(self, obj: IommufdObject) -> int:
        """``iommufd_object_alloc`` + finalize: the lowest free id from 1."""
        obj.id = ida_alloc_min(self.objects, 1)
        self.objects[obj.id] = obj
        return obj.id

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

        return IOCTLS.name(cmd) or COMPAT_IOCTLS.name(cmd)

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        op = IOCTLS.ops.get(cmd)
        if op is None:
            from .vfio_compat import iommufd_vfio_ioctl

            return iommufd_vfio_ioctl(self, caller, cmd, arg)
        return IOCTLS.call(op, self, caller, arg)

    def release(self) -> None:
        """Close: destroy every object, leaves first. Bound devices keep the context alive
        until their device fds close (then `unbound` finishes the job)."""
        self.closed = True
        self._destroy_unreferenced()

    def unbound(self) -> None:
        """A device fd let go of this context."""
        self.devices_bound -= 1
        if self.closed:
            self._destroy_unreferenced()

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
    from . import ioas as A
    from .device import iommufd_get_hw_info
    from .hw_pagetable import iommufd_hwpt_alloc

    def op(cmd: int, name: str, fn: Any, st: Any, last: str) -> IoctlOp[IommufdCtx]:
        return IoctlOp(cmd, name, fn, ArgKind.SIZE, st, last)

    return IoctlTable(
        [
            op(I.IOMMU_DESTROY, "IOMMU_DESTROY", iommufd_destroy, I.IommuDestroy, "id"),
            op(
                I.IOMMU_GET_HW_INFO,
                "IOMMU_GET_HW_INFO",
                iommufd_get_hw_info,
                I.IommuHwInfo,
                "reserved",
            ),
            op(
                I.IOMMU_HWPT_ALLOC,
                "IOMMU_HWPT_ALLOC",
                iommufd_hwpt_alloc,
                I.IommuHwptAlloc,
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
                I.IOMMU_IOAS_UNMAP,
                "IOMMU_IOAS_UNMAP",
                A.iommufd_ioas_unmap,
                I.IommuIoasUnmap,
                "length",
            ),
            op(I.IOMMU_OPTION, "IOMMU_OPTION", iommufd_option, I.IommuOption, "val64"),
            op(
                I.IOMMU_VFIO_IOAS,
                "IOMMU_VFIO_IOAS",
                A.iommufd_vfio_ioas,
                I.IommuVfioIoas,
                "reserved",
            ),
        ]
    )


IOCTLS: IoctlTable[IommufdCtx] = _table()  # after the classes: the handlers import them
