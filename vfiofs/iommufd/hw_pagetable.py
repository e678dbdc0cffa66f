"""Mirror of drivers/iommu/iommufd/hw_pagetable.c: IOMMU_HWPT_ALLOC (paging HWPTs on an
IOAS, nested ones on a nesting parent or a vIOMMU, with an optional fault queue), dirty
tracking and cache invalidation. The HWPT structs and the paging allocation that device
attach uses too are in iommufd_private.py.

Domains come from the IOMMU driver behind the device (``group.driver``: the host IOMMU,
or the mock one with ``iommu = "mock"``); the driver decides which flags and data types
it takes and answers with the kernel's errnos.
"""

from __future__ import annotations

import errno
import functools

import attrs

from ..abi import iommufd as I
from ..errors import KernelError
from ..ioctl_table import Ucmd
from ..iommu.user_data import UserData, UserDataArray, user_data
from .driver import iommu_report_device_fault
from .io_pagetable import iommufd_check_iova_range
from .iommufd_private import (
    IOMMU_NO_PASID,
    Hwpt,
    HwptNested,
    HwptPaging,
    Ioas,
    IommufdCtx,
    IommufdDevice,
    IommufdFault,
    IommufdViommu,
    IopfFault,
    iommufd_hwpt_paging_alloc,
)
from .iova_bitmap import iova_bitmap_set

NESTED_FLAGS = I.IOMMU_HWPT_FAULT_ID_VALID | I.IOMMU_HWPT_ALLOC_PASID


def iommufd_hwpt_nested_alloc(
    ictx: IommufdCtx,
    parent: HwptPaging,
    idev: IommufdDevice,
    flags: int,
    data: UserData | None,
) -> HwptNested:
    """A nested HWPT on a nesting-parent HWPT: EOPNOTSUPP without driver data or with
    other flags, EINVAL for a parent that is not a nesting parent of this IOMMU."""
    if flags & ~NESTED_FLAGS or data is None:
        raise KernelError(errno.EOPNOTSUPP, "flags, or no driver data")
    if parent.auto or not parent.nest_parent or parent.domain.owner is not idev.driver:
        raise KernelError(errno.EINVAL, "the parent is not a nesting parent here")
    domain = idev.driver.domain_alloc_nested(
        idev.dev, parent.domain, flags & ~NESTED_FLAGS, data
    )
    hwpt = HwptNested(
        ictx,
        domain=domain,
        parent=parent,
        pasid_compat=bool(flags & I.IOMMU_HWPT_ALLOC_PASID),
    )
    parent.users += 1
    ictx.add(hwpt)
    return hwpt


def iommufd_viommu_alloc_hwpt_nested(
    viommu: IommufdViommu, flags: int, data: UserData | None
) -> HwptNested:
    """A nested HWPT on a vIOMMU, from the vIOMMU's ``alloc_domain_nested``."""
    if flags & ~NESTED_FLAGS:
        raise KernelError(errno.EOPNOTSUPP, f"flags {flags:#x}")
    if data is None:
        raise KernelError(errno.EOPNOTSUPP, "no driver data")
    domain = viommu.ops.alloc_domain_nested(
        viommu, flags & ~I.IOMMU_HWPT_FAULT_ID_VALID, data
    )
    hwpt = HwptNested(
        viommu.ictx,
        domain=domain,
        parent=viommu.hwpt,
        viommu=viommu,
        pasid_compat=bool(flags & I.IOMMU_HWPT_ALLOC_PASID),
    )
    viommu.users += 1
    viommu.ictx.add(hwpt)
    return hwpt


def iommufd_hwpt_alloc(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    if c.reserved:
        raise KernelError(errno.EOPNOTSUPP, "reserved")
    if (c.data_type == I.IOMMU_HWPT_DATA_NONE) != (c.data_len == 0):
        raise KernelError(errno.EINVAL, "data_type and data_len disagree")
    idev = ictx.get(c.dev_id, IommufdDevice)
    pt = ictx.objects.get(c.pt_id)
    data = user_data(ucmd.caller, c.data_type, c.data_uptr, c.data_len)
    # kernel: iommufd_hwpt_alloc() answers EINVAL for a pt_id of the wrong kind
    hwpt: Hwpt
    if isinstance(pt, Ioas):
        hwpt = iommufd_hwpt_paging_alloc(
            ictx, pt, idev, c.flags, auto=False, user_data=data
        )
    elif isinstance(pt, HwptPaging):
        hwpt = iommufd_hwpt_nested_alloc(ictx, pt, idev, c.flags, data)
    elif isinstance(pt, IommufdViommu):
        if pt.iommu_dev is not idev.driver:
            raise KernelError(errno.EINVAL, "the vIOMMU is of another IOMMU")
        hwpt = iommufd_viommu_alloc_hwpt_nested(pt, c.flags, data)
    else:
        raise KernelError(errno.EINVAL, f"pt_id {c.pt_id} is no IOAS, HWPT or vIOMMU")
    if c.flags & I.IOMMU_HWPT_FAULT_ID_VALID:
        fault = ictx.objects.get(c.fault_id)
        if not isinstance(fault, IommufdFault):
            ictx.remove(hwpt)
            raise KernelError(errno.ENOENT, f"no FAULT with id {c.fault_id}")
        hwpt.fault = fault
        hwpt.domain.fault_handler = functools.partial(iommufd_dma_fault, hwpt)
        fault.users += 1
    ucmd.respond(attrs.evolve(c, out_hwpt_id=hwpt.id))
    return 0


def iommufd_dma_fault(hwpt: Hwpt, group: object, iova: int, write: bool) -> None:
    """A device of ``group`` faulted at ``iova`` on ``hwpt``: a page request for its
    fault queue (the device still sees its DMA fail: the models do not retry)."""
    idev = next((d for d in hwpt.devices if d.group is group), None)
    if idev is None:
        return
    perm = I.IOMMU_PGFAULT_PERM_WRITE if write else I.IOMMU_PGFAULT_PERM_READ
    fault = IopfFault(I.IOMMU_PGFAULT_FLAGS_LAST_PAGE, 0, 0, perm, iova)
    iommu_report_device_fault(idev, IOMMU_NO_PASID, fault)


def iommufd_hwpt_set_dirty_tracking(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    if c.flags & ~I.IOMMU_HWPT_DIRTY_TRACKING_ENABLE:
        raise KernelError(errno.EOPNOTSUPP, "flags")
    hwpt = ictx.get(c.hwpt_id, HwptPaging)
    # iopt_set_dirty_tracking(): EINVAL for a domain without dirty_ops
    if not hwpt.domain.dirty_ops:
        raise KernelError(errno.EINVAL, "the HWPT was not allocated for dirty tracking")
    hwpt.domain.set_dirty_tracking(bool(c.flags & I.IOMMU_HWPT_DIRTY_TRACKING_ENABLE))
    return 0


def iommufd_hwpt_get_dirty_bitmap(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    if c.flags & ~I.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR or c.reserved:
        raise KernelError(errno.EOPNOTSUPP, "flags or reserved")
    hwpt = ictx.get(c.hwpt_id, HwptPaging)
    domain = hwpt.domain
    if not domain.dirty_ops:
        raise KernelError(errno.EOPNOTSUPP, "the HWPT cannot track dirty pages")
    assert hwpt.ioas is not None
    iommufd_check_iova_range(hwpt.ioas.iopt, c.iova, c.length, c.page_size)
    dirty = domain.read_and_clear_dirty(
        c.iova,
        c.length,
        clear=not c.flags & I.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
    )
    iova_bitmap_set(ucmd.caller, c.data, c.iova, c.length, c.page_size, dirty)
    return 0


def iommufd_hwpt_invalidate(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    """HWPT_INVALIDATE on a nested HWPT (its domain's ``cache_invalidate_user``) or a
    vIOMMU (its ops' ``cache_invalidate``). The entries handled are written back in
    ``entry_num`` even when the call fails part way."""
    c = ucmd.cmd
    done = 0
    err: KernelError | None = None
    if c.reserved:
        err = KernelError(errno.EOPNOTSUPP, "reserved")
    elif c.entry_num and (not c.data_uptr or not c.entry_len):
        err = KernelError(errno.EINVAL, "entries without data_uptr or entry_len")
    else:
        array = UserDataArray(
            ucmd.caller, c.data_type, c.data_uptr, c.entry_len, c.entry_num
        )
        obj = ictx.objects.get(c.hwpt_id)
        try:
            if isinstance(obj, HwptNested):
                obj.domain.cache_invalidate_user(array)
            elif isinstance(obj, IommufdViommu):
                obj.ops.cache_invalidate(obj, array)
            elif obj is None:
                raise KernelError(errno.ENOENT, f"no object {c.hwpt_id}")
            else:
                raise KernelError(errno.EINVAL, "neither a nested HWPT nor a vIOMMU")
        except KernelError as e:
            err = e
        done = array.done
    ucmd.respond(attrs.evolve(c, entry_num=done))
    if err is not None:
        raise err
    return 0
