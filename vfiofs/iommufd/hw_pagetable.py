"""Mirror of drivers/iommu/iommufd/hw_pagetable.c: HWPT_PAGING (a domain that mirrors
an IOAS) and HWPT_NESTED (a user-managed stage 1 over a nesting parent or a vIOMMU),
HWPT_ALLOC, dirty tracking and cache invalidation.

Domains come from the IOMMU driver behind the device (``group.driver``: the host IOMMU,
or the mock one with ``iommu = "mock"``); the driver decides which flags and data types
it takes and answers with the kernel's errnos.
"""

from __future__ import annotations

import errno
import functools
from typing import Any

import attrs

from ..abi import iommufd as I
from ..errors import KernelError
from ..ioctl_table import Ucmd
from ..iommu.domain import IommuDomain
from .ioas import Ioas
from .main import IommufdCtx, IommufdObject

U64_MAX = (1 << 64) - 1


@attrs.define(eq=False)
class Hwpt(IommufdObject):
    """``struct iommufd_hw_pagetable``: what paging and nested HWPTs share."""

    domain: IommuDomain = attrs.Factory(IommuDomain)
    devices: list[object] = attrs.Factory(list)
    fault: Any = None  # the IommufdFault taking this HWPT's page faults
    pasid_compat: bool = False

    def destroy(self) -> None:
        if self.fault is not None:
            self.fault.users -= 1
            self.fault = None


@attrs.define(eq=False)
class HwptPaging(Hwpt):
    """``struct iommufd_hwpt_paging``. ``auto`` ones are made by attaching a device to an
    IOAS and vanish with their last device."""

    ioas: Ioas | None = None
    auto: bool = False
    nest_parent: bool = False

    def destroy(self) -> None:
        super().destroy()
        if self.ioas is not None:
            self.ioas.iopt.remove_domain(self.domain)
            self.ioas.users -= 1
            self.ioas = None


@attrs.define(eq=False)
class HwptNested(Hwpt):
    """``struct iommufd_hwpt_nested``: holds its parent, or its vIOMMU."""

    parent: HwptPaging | None = None
    viommu: Any = None

    def destroy(self) -> None:
        super().destroy()
        if self.viommu is not None:
            self.viommu.users -= 1
        elif self.parent is not None:
            self.parent.users -= 1
        self.viommu = self.parent = None


def iommufd_hwpt_paging_alloc(
    ictx: IommufdCtx,
    ioas: Ioas,
    idev: Any = None,
    flags: int = 0,
    *,
    auto: bool,
    user_data: Any = None,
) -> HwptPaging:
    """A paging domain from the device's driver, filled from the IOAS (pinning, which
    may fail with ENOMEM under RLIMIT_MEMLOCK before anything changes)."""
    valid = (
        I.IOMMU_HWPT_ALLOC_NEST_PARENT
        | I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
        | I.IOMMU_HWPT_FAULT_ID_VALID
        | I.IOMMU_HWPT_ALLOC_PASID
    )
    if flags & ~valid:
        raise KernelError(errno.EOPNOTSUPP, f"flags {flags:#x}")
    driver = idev.driver if idev is not None else None
    if driver is None:
        domain = IommuDomain(ictx.address_width)
    else:
        from ..iommu.driver import IOMMU_CAP_DIRTY_TRACKING

        if flags & I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING and not driver.capable(
            idev.dev, IOMMU_CAP_DIRTY_TRACKING
        ):
            raise KernelError(errno.EOPNOTSUPP, "the IOMMU cannot track dirty pages")
        domain = driver.domain_alloc_paging_flags(
            idev.dev, flags & ~I.IOMMU_HWPT_FAULT_ID_VALID, user_data
        )
    hwpt = HwptPaging(
        ictx,
        ioas=ioas,
        domain=domain,
        auto=auto,
        nest_parent=bool(flags & I.IOMMU_HWPT_ALLOC_NEST_PARENT),
        pasid_compat=bool(flags & I.IOMMU_HWPT_ALLOC_PASID),
    )
    ioas.iopt.add_domain(domain)  # EADDRINUSE / ENOMEM before anything changes
    ioas.users += 1
    ictx.add(hwpt)
    return hwpt


def iommufd_hwpt_nested_alloc(
    ictx: IommufdCtx, parent: HwptPaging, idev: Any, flags: int, user_data: Any
) -> HwptNested:
    if (
        flags & ~(I.IOMMU_HWPT_FAULT_ID_VALID | I.IOMMU_HWPT_ALLOC_PASID)
        or not user_data
    ):
        raise KernelError(errno.EOPNOTSUPP, "flags, or no driver data")
    if parent.auto or not parent.nest_parent or parent.domain.owner is not idev.driver:
        raise KernelError(errno.EINVAL, "the parent is not a nesting parent here")
    domain = idev.driver.domain_alloc_nested(
        idev.dev,
        parent.domain,
        flags & ~(I.IOMMU_HWPT_FAULT_ID_VALID | I.IOMMU_HWPT_ALLOC_PASID),
        user_data,
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
    viommu: Any, flags: int, user_data: Any
) -> HwptNested:
    if flags & ~(I.IOMMU_HWPT_FAULT_ID_VALID | I.IOMMU_HWPT_ALLOC_PASID):
        raise KernelError(errno.EOPNOTSUPP, f"flags {flags:#x}")
    if not user_data:
        raise KernelError(errno.EOPNOTSUPP, "no driver data")
    alloc = getattr(viommu.ops, "alloc_domain_nested", None)
    if alloc is None:
        raise KernelError(errno.EOPNOTSUPP, "the vIOMMU has no nested domains")
    domain = alloc(viommu, flags & ~I.IOMMU_HWPT_FAULT_ID_VALID, user_data)
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
    from .device import IommufdDevice
    from .eventq import IommufdFault
    from .viommu import IommufdViommu, user_data

    c = ucmd.cmd
    if c.reserved:
        raise KernelError(errno.EOPNOTSUPP, "reserved")
    if (c.data_type == I.IOMMU_HWPT_DATA_NONE) != (c.data_len == 0):
        raise KernelError(errno.EINVAL, "data_type and data_len disagree")
    idev = ictx.get(c.dev_id, IommufdDevice)
    pt = ictx.objects.get(c.pt_id)
    data = user_data(ucmd, c.data_type, c.data_uptr, c.data_len)
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


def iommufd_dma_fault(hwpt: Hwpt, group: Any, iova: int, write: bool) -> None:
    """A device of ``group`` faulted at ``iova`` on ``hwpt``: a page request for its
    fault queue (the device still sees its DMA fail: our models do not retry)."""
    from .eventq import IopfFault, IopfGroup, iommufd_fault_iopf_handler

    idev = next((d for d in hwpt.devices if getattr(d, "group", None) is group), None)
    if idev is None or hwpt.fault is None:
        return
    perm = I.IOMMU_PGFAULT_PERM_WRITE if write else I.IOMMU_PGFAULT_PERM_READ
    fault = IopfFault(I.IOMMU_PGFAULT_FLAGS_LAST_PAGE, 0, 0, perm, iova)
    iommufd_fault_iopf_handler(hwpt, IopfGroup(idev, 0, [fault]))


def _hwpt_paging(ictx: IommufdCtx, hwpt_id: int) -> HwptPaging:
    return ictx.get(hwpt_id, HwptPaging)


def iommufd_hwpt_set_dirty_tracking(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    if c.flags & ~I.IOMMU_HWPT_DIRTY_TRACKING_ENABLE:
        raise KernelError(errno.EOPNOTSUPP, "flags")
    hwpt = _hwpt_paging(ictx, c.hwpt_id)
    # iopt_set_dirty_tracking(): EINVAL for a domain without dirty_ops
    if not hwpt.domain.dirty_ops:
        raise KernelError(errno.EINVAL, "the HWPT was not allocated for dirty tracking")
    hwpt.domain.set_dirty_tracking(bool(c.flags & I.IOMMU_HWPT_DIRTY_TRACKING_ENABLE))
    return 0


def iommufd_hwpt_get_dirty_bitmap(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    from .iova_bitmap import iova_bitmap_check, iova_bitmap_set

    c = ucmd.cmd
    if c.flags & ~I.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR or c.reserved:
        raise KernelError(errno.EOPNOTSUPP, "flags or reserved")
    hwpt = _hwpt_paging(ictx, c.hwpt_id)
    domain = hwpt.domain
    if not domain.dirty_ops:
        raise KernelError(errno.EOPNOTSUPP, "the HWPT cannot track dirty pages")
    assert hwpt.ioas is not None
    iova_bitmap_check(hwpt.ioas.iopt.iova_alignment, c.iova, c.length, c.page_size)
    dirty = domain.read_and_clear_dirty(
        c.iova,
        c.length,
        clear=not c.flags & I.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
    )
    iova_bitmap_set(ucmd.caller, c.data, c.iova, c.length, c.page_size, dirty)
    return 0


def iommufd_hwpt_invalidate(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    from .viommu import IommufdViommu

    c = ucmd.cmd
    done = 0
    err: KernelError | None = None
    if c.reserved:
        err = KernelError(errno.EOPNOTSUPP, "reserved")
    elif c.entry_num and (not c.data_uptr or not c.entry_len):
        err = KernelError(errno.EINVAL, "entries without data_uptr or entry_len")
    else:
        array = UserDataArray(ucmd, c.data_type, c.data_uptr, c.entry_len, c.entry_num)
        obj = ictx.objects.get(c.hwpt_id)
        try:
            if isinstance(obj, HwptNested):
                inval = getattr(obj.domain, "cache_invalidate_user", None)
                if inval is None:
                    raise KernelError(errno.EOPNOTSUPP, "no invalidation")
                inval(array)
            elif isinstance(obj, IommufdViommu):
                inval = getattr(obj.ops, "cache_invalidate", None)
                if inval is None:
                    raise KernelError(errno.EOPNOTSUPP, "no invalidation")
                inval(obj, array)
            elif obj is None:
                raise KernelError(errno.ENOENT, f"no object {c.hwpt_id}")
            else:
                raise KernelError(errno.EINVAL, "neither a nested HWPT nor a vIOMMU")
        except KernelError as e:
            err = e
        done = array.done
    # the number handled is written back even on failure (partial progress)
    ucmd.respond(attrs.evolve(c, entry_num=done))
    if err is not None:
        raise err
    return 0


class UserDataArray:
    """``struct iommu_user_data_array``: ``entry_num`` entries of ``entry_len`` bytes
    at ``uptr``; the driver counts what it handled in ``done``."""

    def __init__(
        self, ucmd: Ucmd, type_: int, uptr: int, entry_len: int, entry_num: int
    ) -> None:
        self.ucmd, self.type, self.uptr = ucmd, type_, uptr
        self.entry_len, self.entry_num = entry_len, entry_num
        self.done = 0

    def entry(self, st: Any, index: int, last: str) -> Any:
        """iommu_copy_struct_from_user_array(): entry ``index``, zero-extended if
        entry_len is shorter than the struct (EINVAL below ``last``), E2BIG for a
        non-zero tail past it."""
        from ..ioctl_table import copy_struct_from_user

        if self.entry_len < st.offsetofend(last):
            raise KernelError(errno.EINVAL, f"entry_len {self.entry_len}")
        return copy_struct_from_user(
            self.ucmd.caller, st, self.uptr + index * self.entry_len, self.entry_len
        )
