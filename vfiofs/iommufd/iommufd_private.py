"""Mirror of drivers/iommu/iommufd/iommufd_private.h: the structs of iommufd and the
functions more than one of its files use.

`IommufdCtx` is an open /dev/iommu (``struct iommufd_ctx``): its object table, the
compat IOAS, and the `FileOperations` main.py opened it with. The objects are `Ioas`,
`HwptPaging` and `IommufdDevice`. Every iommufd module imports this header (and
io_pagetable.py below it), never another handler module; main.py, which holds the ioctl
table, imports the handlers.
"""

from __future__ import annotations

import errno
from typing import TypeVar

import attrs

from ..devices.pci import PciDevice
from ..errors import KernelError
from ..idr import ida_alloc_min
from ..ioctl_table import FileOperations
from ..iommu.domain import IommuDomain
from ..iommu.group import IommuGroup
from ..uaccess import Caller
from .io_pagetable import IoPagetable

T = TypeVar("T")


@attrs.define(eq=False)
class IommufdObject:
    """``struct iommufd_object``: the base of IOAS, HWPT and DEVICE objects. ``users``
    counts references from other objects and drivers: a referenced object cannot be
    destroyed (EBUSY)."""

    ictx: IommufdCtx
    id: int = 0
    users: int = 0

    def busy(self) -> bool:
        """Whether something still holds the object (DESTROY says EBUSY)."""
        return self.users > 0

    def destroy(self) -> None:
        """Free what the object holds (called once, when it leaves the table)."""


@attrs.define(eq=False)
class IommufdCtx:
    """``struct iommufd_ctx``: an open /dev/iommu (or /dev/vfio/vfio served by iommufd).

    Object ids are the lowest free id from 1, reused after destroy.
    """

    fops: FileOperations[IommufdCtx]
    address_width: int = 48
    account_mm: bool = False  # IOMMU_OPTION_RLIMIT_MODE: 1 = per process (VFIO-like)
    objects: dict[int, IommufdObject] = attrs.Factory(dict)
    compat_ioas: Ioas | None = None  # the IOAS the VFIO compat layer uses (vfio_ioas)
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

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        return self.fops.unlocked_ioctl(self, caller, cmd, arg)

    def ioctl_name(self, cmd: int) -> str | None:
        return self.fops.ioctl_name(self, cmd)

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
                if not obj.busy():
                    self.remove(obj)
                    progress = True
        if not self.objects:
            self.compat_ioas = None


@attrs.define(eq=False)
class Ioas(IommufdObject):
    """``struct iommufd_ioas``: an I/O address space."""

    iopt: IoPagetable = attrs.Factory(IoPagetable)

    def destroy(self) -> None:
        for area in list(self.iopt.areas):
            self.iopt.remove(area)


@attrs.define(eq=False)
class HwptPaging(IommufdObject):
    """``struct iommufd_hwpt_paging``: one `IommuDomain` that mirrors its IOAS. ``auto``
    ones are made by attaching a device to an IOAS and vanish with their last device."""

    ioas: Ioas | None = None
    domain: IommuDomain = attrs.Factory(IommuDomain)
    auto: bool = False
    devices: list[IommufdDevice] = attrs.Factory(list)

    def destroy(self) -> None:
        if self.ioas is not None:
            self.ioas.iopt.remove_domain(self.domain)
            self.ioas.users -= 1
            self.ioas = None


@attrs.define(eq=False)
class IommufdDevice(IommufdObject):
    """``struct iommufd_device``: one device bound into a context by its vfio driver."""

    group: IommuGroup | None = None
    dev: PciDevice | None = None
    hwpt: HwptPaging | None = None
    bound: bool = True  # the vfio driver's reference: DESTROY says EBUSY

    def busy(self) -> bool:
        return self.users > 0 or self.bound

    def destroy(self) -> None:
        iommufd_hw_pagetable_detach(self)
        if self.group is not None:
            self.group.release_dma_owner(self.ictx)


def iommufd_hwpt_paging_alloc(
    ictx: IommufdCtx, ioas: Ioas, *, auto: bool
) -> HwptPaging:
    """A HWPT_PAGING on ``ioas``: its domain is loaded with every area first, which may
    fail (RLIMIT_MEMLOCK) before anything changes."""
    hwpt = HwptPaging(
        ictx, ioas=ioas, domain=IommuDomain(ictx.address_width), auto=auto
    )
    ioas.iopt.add_domain(hwpt.domain)
    ioas.users += 1
    ictx.add(hwpt)
    return hwpt


def iommufd_hw_pagetable_detach(idev: IommufdDevice) -> None:
    """Take ``idev`` off its HWPT: back to blocked DMA. An auto HWPT goes with its last
    device."""
    hwpt = idev.hwpt
    if hwpt is None:
        return
    idev.hwpt = None
    hwpt.devices.remove(idev)
    hwpt.users -= 1
    if hwpt.ioas is not None:
        hwpt.ioas.iopt.reserved.pop(idev, None)
    if idev.group is not None:
        idev.group.attach_domain(None)
    if hwpt.auto and not hwpt.devices:
        hwpt.ictx.remove(hwpt)
