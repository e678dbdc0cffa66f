"""Mirror of drivers/iommu/iommufd/viommu.c: vIOMMU, vDEVICE and HW queue objects.

A vIOMMU wraps a nesting-parent HWPT for one IOMMU instance (the driver behind the
device): it allocates nested domains, takes vIOMMU-wide invalidations, owns vEVENTQs
(eventq.py) and HW queues. The driver's part is ``viommu.ops`` (``struct
iommufd_viommu_ops``), filled by ``driver.viommu_init``; only the mock driver has one.
"""

from __future__ import annotations

import errno

import attrs

from ..abi import iommufd as I
from ..errors import KernelError
from ..ioctl_table import Ucmd
from ..iommu.user_data import user_data
from ..uaccess import PAGE_SIZE, MemorySource
from .access import (
    iommufd_access_attach_internal,
    iommufd_access_create_internal,
    iommufd_access_destroy,
    iommufd_access_pin_pages,
)
from .io_pagetable import U64_MAX
from .iommufd_private import (
    HwptPaging,
    IommufdAccess,
    IommufdCtx,
    IommufdDevice,
    IommufdHwQueue,
    IommufdVdevice,
    IommufdViommu,
)


def iommufd_viommu_alloc_ioctl(ictx: IommufdCtx, ucmd: Ucmd) -> int:
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
            viommu, hwpt.domain, user_data(ucmd.caller, c.type, c.data_uptr, c.data_len)
        )
    except BaseException:
        hwpt.users -= 1
        raise
    ictx.add(viommu)
    ucmd.respond(attrs.evolve(c, out_viommu_id=viommu.id))
    return 0


def iommufd_vdevice_alloc_ioctl(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    if c.virt_id > U64_MAX:
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
    viommu.ops.vdevice_init(vdev)
    viommu.users += 1
    viommu.vdevs[c.virt_id] = vdev
    idev.vdev = vdev
    ictx.add(vdev)
    ucmd.respond(attrs.evolve(c, out_vdevice_id=vdev.id))
    return 0


def _hw_queue_alloc_phys(
    c: I.IommuHwQueueAlloc, viommu: IommufdViommu
) -> tuple[IommufdAccess, tuple[MemorySource, int]]:
    """Pin the queue memory in the parent IOAS; it must be one contiguous run of one
    process's memory (EFAULT otherwise: the hardware reads it by physical address)."""
    aligned = c.nesting_parent_iova & ~(PAGE_SIZE - 1)
    offset = c.nesting_parent_iova - aligned
    length = (offset + c.length + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
    assert viommu.hwpt is not None and viommu.hwpt.ioas is not None
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
    if c.nesting_parent_iova + c.length - 1 > U64_MAX:
        raise KernelError(errno.EOVERFLOW, "nesting_parent_iova + length")
    viommu = ictx.get(c.viommu_id, IommufdViommu)
    if not viommu.ops.get_hw_queue_size(viommu, c.type):
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
