"""Mirror of drivers/iommu/iommufd/viommu.c: vIOMMU, vDEVICE and HW queue objects.

A vIOMMU wraps a nesting-parent HWPT for one IOMMU instance (the driver behind the
device): it allocates nested domains, takes vIOMMU-wide invalidations, owns vEVENTQs
(eventq.py) and HW queues. The driver's part is ``viommu.ops`` (``struct
iommufd_viommu_ops``), filled by ``driver.viommu_init``; only the mock driver has one.
"""

from __future__ import annotations

import errno
from typing import Any

import attrs

from ..abi import iommufd as I
from ..errors import KernelError
from ..ioctl_table import Ucmd
from .access import (
    iommufd_access_attach_internal,
    iommufd_access_create_internal,
    iommufd_access_destroy,
    iommufd_access_pin_pages,
)
from .main import IommufdCtx, IommufdObject

PAGE = 4096
ULONG_MAX = (1 << 64) - 1


@attrs.define(eq=False)
class IommufdViommu(IommufdObject):
    """``struct iommufd_viommu``."""

    type: int = 0
    hwpt: Any = None  # the nesting parent HwptPaging
    iommu_dev: Any = None  # the IommuDriver instance behind it
    ops: Any = None  # struct iommufd_viommu_ops, from the driver
    vdevs: dict[int, IommufdVdevice] = attrs.Factory(dict)
    veventqs: list[Any] = attrs.Factory(list)

    def destroy(self) -> None:
        destroy = getattr(self.ops, "destroy", None)
        if destroy is not None:
            destroy(self)
        if self.hwpt is not None:
            self.hwpt.users -= 1
            self.hwpt = None

    def find_dev(self, virt_id: int) -> Any:
        """iommufd_viommu_find_dev(): the device behind a virtual id, or None."""
        vdev = self.vdevs.get(virt_id)
        return None if vdev is None else vdev.idev


@attrs.define(eq=False)
class IommufdVdevice(IommufdObject):
    """``struct iommufd_vdevice``: a device as one vIOMMU names it (``virt_id``)."""

    viommu: IommufdViommu | None = None
    idev: Any = None
    virt_id: int = 0

    def destroy(self) -> None:
        viommu, idev = self.viommu, self.idev
        if viommu is None:
            return
        destroy = getattr(viommu.ops, "vdevice_destroy", None)
        if destroy is not None:
            destroy(self)
        if viommu.vdevs.get(self.virt_id) is self:
            del viommu.vdevs[self.virt_id]
        viommu.users -= 1
        if idev is not None and idev.vdev is self:
            idev.vdev = None
        self.viommu = None


@attrs.define(eq=False)
class IommufdHwQueue(IommufdObject):
    """``struct iommufd_hw_queue``: queue memory the hardware reads by physical
    address, pinned in the parent IOAS for the queue's life."""

    viommu: IommufdViommu | None = None
    type: int = 0
    index: int = 0
    base_addr: int = 0
    length: int = 0
    access: Any = None
    on_destroy: Any = None  # the driver's hw_queue->destroy

    def destroy(self) -> None:
        if self.on_destroy is not None:
            self.on_destroy(self)
        if self.access is not None:
            iommufd_access_destroy(self.access)
            self.access = None
        if self.viommu is not None:
            self.viommu.users -= 1
            self.viommu = None


class _UserData:
    """``struct iommu_user_data``: a driver-specific blob in the caller's memory."""

    def __init__(self, ucmd: Ucmd, type_: int, uptr: int, length: int) -> None:
        self.ucmd, self.type, self.uptr, self.len = ucmd, type_, uptr, length

    def copy(self, st: Any, last: str) -> Any:
        """iommu_copy_struct_from_user(): EINVAL if shorter than ``last`` needs,
        E2BIG for a non-zero tail past the driver's struct."""
        from ..ioctl_table import copy_struct_from_user

        if self.len < st.offsetofend(last):
            raise KernelError(errno.EINVAL, f"data_len {self.len}")
        return copy_struct_from_user(self.ucmd.caller, st, self.uptr, self.len)

    def copy_back(self, st: Any) -> None:
        """iommu_copy_struct_to_user(): write the driver's answer, at most len bytes."""
        self.ucmd.caller.copy_to_user(self.uptr, st.pack()[: self.len])


def user_data(ucmd: Ucmd, type_: int, uptr: int, length: int) -> _UserData | None:
    return _UserData(ucmd, type_, uptr, length) if length else None


def iommufd_viommu_alloc_ioctl(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    from .device import IommufdDevice
    from .hw_pagetable import HwptPaging

    c = ucmd.cmd
    if c.flags or c.type == I.IOMMU_VIOMMU_TYPE_DEFAULT:
        raise KernelError(errno.EOPNOTSUPP, "flags or type")
    idev = ictx.get(c.dev_id, IommufdDevice)
    driver = idev.driver
    if not driver.get_viommu_size(idev.dev, c.type):
        raise KernelError(errno.EOPNOTSUPP, f"no vIOMMU of type {c.type:#x}")
    hwpt = ictx.get(c.hwpt_id, HwptPaging)
    if not hwpt.nest_parent:
        raise KernelError(errno.EINVAL, "the HWPT is not a nesting parent")
    viommu = IommufdViommu(ictx, type=c.type, hwpt=hwpt, iommu_dev=driver)
    hwpt.users += 1
    try:
        driver.viommu_init(
            viommu, hwpt.domain, user_data(ucmd, c.type, c.data_uptr, c.data_len)
        )
    except BaseException:
        hwpt.users -= 1
        raise
    ictx.add(viommu)
    ucmd.respond(attrs.evolve(c, out_viommu_id=viommu.id))
    return 0


def iommufd_vdevice_alloc_ioctl(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    from .device import IommufdDevice

    c = ucmd.cmd
    if c.virt_id > ULONG_MAX:
        raise KernelError(errno.EINVAL, "virt_id")
    viommu = ictx.get(c.viommu_id, IommufdViommu)
    idev = ictx.get(c.dev_id, IommufdDevice)
    if viommu.iommu_dev is not idev.driver:
        raise KernelError(errno.EINVAL, "the device is behind another IOMMU")
    if idev.vdev is not None:
        raise KernelError(errno.EEXIST, "the device has a vDEVICE")
    if c.virt_id in viommu.vdevs:
        raise KernelError(errno.EEXIST, f"virt_id {c.virt_id:#x} is taken")
    vdev = IommufdVdevice(ictx, viommu=viommu, idev=idev, virt_id=c.virt_id)
    init = getattr(viommu.ops, "vdevice_init", None)
    if init is not None:
        init(vdev)
    viommu.users += 1
    viommu.vdevs[c.virt_id] = vdev
    idev.vdev = vdev
    ictx.add(vdev)
    ucmd.respond(attrs.evolve(c, out_vdevice_id=vdev.id))
    return 0


def _hw_queue_alloc_phys(c: Any, viommu: IommufdViommu) -> tuple[Any, tuple[Any, int]]:
    """Pin the queue memory in the parent IOAS; it must be one contiguous run of one
    process's memory (EFAULT otherwise: the hardware reads it by physical address)."""
    aligned = c.nesting_parent_iova & ~(PAGE - 1)
    offset = c.nesting_parent_iova - aligned
    length = (offset + c.length + PAGE - 1) // PAGE * PAGE
    access = iommufd_access_create_internal(viommu.ictx)
    iommufd_access_attach_internal(access, viommu.hwpt.ioas)
    try:
        pieces = iommufd_access_pin_pages(access, aligned, length, write=False)
        mm, va, _ = pieces[0]
        pos = va
        for pmm, pva, plen in pieces:
            if pmm is not mm or pva != pos:
                raise KernelError(errno.EFAULT, "queue memory is not contiguous")
            pos += plen
    except BaseException:
        iommufd_access_destroy(access)
        raise
    return access, (mm, va + offset)


def iommufd_hw_queue_alloc_ioctl(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    if c.flags or c.type == I.IOMMU_HW_QUEUE_TYPE_DEFAULT:
        raise KernelError(errno.EOPNOTSUPP, "flags or type")
    if not c.length:
        raise KernelError(errno.EINVAL, "length 0")
    if c.nesting_parent_iova + c.length - 1 > ULONG_MAX:
        raise KernelError(errno.EOVERFLOW, "nesting_parent_iova + length")
    viommu = ictx.get(c.viommu_id, IommufdViommu)
    size = getattr(viommu.ops, "get_hw_queue_size", None)
    if size is None or not size(viommu, c.type):
        raise KernelError(errno.EOPNOTSUPP, f"no HW queue of type {c.type:#x}")
    access, base_pa = _hw_queue_alloc_phys(c, viommu)
    hw_queue = IommufdHwQueue(
        ictx,
        viommu=viommu,
        type=c.type,
        index=c.index,
        base_addr=c.nesting_parent_iova,
        length=c.length,
        access=access,
    )
    viommu.users += 1
    try:
        viommu.ops.hw_queue_init_phys(hw_queue, c.index, base_pa)
    except BaseException:
        hw_queue.destroy()
        raise
    ictx.add(hw_queue)
    ucmd.respond(attrs.evolve(c, out_hw_queue_id=hw_queue.id))
    return 0
