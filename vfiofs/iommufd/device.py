"""Mirror of drivers/iommu/iommufd/device.c: the API the vfio core (and the selftest)
use to bind, attach, replace, detach and unbind a device (``iommufd_device_bind`` ...),
for the whole device (``IOMMU_NO_PASID``) or one PASID of it, and IOMMU_GET_HW_INFO,
which asks the device's IOMMU driver. The DEVICE struct and the detach that teardown
needs are in iommufd_private.py; the iommufd_access half of device.c is access.py.
"""

from __future__ import annotations

import errno
from typing import Literal

import attrs

from ..abi import iommufd as I
from ..errors import KernelError
from ..ioctl_table import Ucmd
from ..iommu.driver import IOMMU_CAP_DIRTY_TRACKING
from ..iommu.group import IommuGroup
from .iommufd_private import (
    IOMMU_NO_PASID,
    Hwpt,
    HwptNested,
    HwptPaging,
    Ioas,
    IommufdCtx,
    IommufdDevice,
    iommufd_hw_pagetable_detach,
    iommufd_hwpt_paging_alloc,
)

AttachMode = Literal["attach", "replace", "either"]


def iommufd_device_bind(
    ictx: IommufdCtx, group: IommuGroup, dev: object
) -> IommufdDevice:
    """Claim the group's DMA ownership for ``ictx`` (EPERM/EBUSY) and make the DEVICE;
    the driver's file keeps the context until `iommufd_device_unbind`."""
    group.claim_dma_owner(ictx)
    idev = IommufdDevice(ictx, group=group, dev=dev)
    ictx.add(idev)
    ictx.file_opened()
    return idev


def _resolve_pt(idev: IommufdDevice, pt_id: int) -> tuple[Hwpt | None, Ioas | None]:
    """An IOAS (with its auto HWPT for this device's IOMMU, None until there is one)
    or a HWPT. ENOENT for no object, EINVAL for one of another kind."""
    ictx = idev.ictx
    pt = ictx.objects.get(pt_id)
    if pt is None:
        raise KernelError(errno.ENOENT, f"no object {pt_id}")
    if isinstance(pt, Ioas):
        hwpt = next(
            (
                h
                for h in ictx.objects.values()
                if isinstance(h, HwptPaging)
                and h.auto
                and h.ioas is pt
                and h.domain.owner is idev.driver
            ),
            None,
        )
        return hwpt, pt
    if isinstance(pt, HwptPaging) and pt.ioas is not None:
        return pt, pt.ioas
    if isinstance(pt, HwptNested):
        return pt, None
    raise KernelError(errno.EINVAL, f"object {pt_id} is neither an IOAS nor a HWPT")


def _pasid_compat(idev: IommufdDevice, hwpt: Hwpt, pasid: int) -> None:
    """``iommufd_hwpt_pasid_compat``: PASID attachments need PASID-capable HWPTs on
    both the PASID and the whole device (EINVAL)."""
    if pasid == IOMMU_NO_PASID:
        if not hwpt.pasid_compat and any(p for p in idev.attached if p):
            raise KernelError(
                errno.EINVAL, "PASIDs are attached: need an ALLOC_PASID HWPT"
            )
        return
    if not hwpt.pasid_compat:
        raise KernelError(errno.EINVAL, "the HWPT was not allocated with ALLOC_PASID")
    whole = idev.attached.get(IOMMU_NO_PASID)
    if whole is not None and not whole.pasid_compat:
        raise KernelError(errno.EINVAL, "the device's own HWPT is not PASID-capable")


def iommufd_device_attach(
    idev: IommufdDevice,
    pt_id: int,
    pasid: int = IOMMU_NO_PASID,
    *,
    mode: AttachMode = "either",
) -> int:
    """Attach ``pasid`` of the device to an IOAS (an auto HWPT of it, reused or new) or
    to a HWPT. ``mode`` "attach" (``iommufd_device_attach``: EINVAL if attached
    elsewhere), "replace" (``iommufd_device_replace``: EINVAL if not attached) or
    "either" (what vfio's ATTACH_IOMMUFD_PT does). Returns the HWPT id.

    Raises:
        KernelError: ENOENT/EINVAL (pt_id), EINVAL (PASID, mode, compat),
            EADDRINUSE (the device's reserved regions meet a mapping or an allowed
            range), and what the domain allocation and the driver answer.
    """
    ictx = idev.ictx
    group = idev.group
    assert group is not None
    driver = idev.driver
    if pasid != IOMMU_NO_PASID:
        max_log2 = driver.max_pasid_log2(idev.dev)
        if not max_log2 or pasid >= 1 << max_log2:
            raise KernelError(errno.EINVAL, f"PASID {pasid} beyond the device's width")
    old = idev.attached.get(pasid)
    if old is None and mode == "replace":
        raise KernelError(errno.EINVAL, f"PASID {pasid} is not attached")
    hwpt, ioas = _resolve_pt(idev, pt_id)
    if hwpt is not None and hwpt is old:
        return hwpt.id
    if old is not None and mode == "attach":
        raise KernelError(errno.EINVAL, f"PASID {pasid} is attached elsewhere")
    if hwpt is not None:
        _pasid_compat(idev, hwpt, pasid)
        driver.attach_dev(hwpt.domain, idev.dev)
        if pasid != IOMMU_NO_PASID:
            driver.set_dev_pasid(
                hwpt.domain, idev.dev, pasid, old.domain if old else None
            )
    reserved = group.iova_reserved()
    if ioas is not None:
        # iopt_table_enforce_dev_resv_regions(): nothing mapped or allowed there
        ioas.iopt.check_reserve(reserved)
    if hwpt is None:
        assert ioas is not None
        flags = I.IOMMU_HWPT_ALLOC_PASID if pasid != IOMMU_NO_PASID else 0
        new = iommufd_hwpt_paging_alloc(ictx, ioas, idev, flags, auto=True)
        try:
            _pasid_compat(idev, new, pasid)
            driver.attach_dev(new.domain, idev.dev)
        except KernelError:
            ictx.remove(new)
            raise
        hwpt = new
    if old is not None:
        iommufd_hw_pagetable_detach(idev, pasid)
    if isinstance(hwpt, HwptPaging) and hwpt.ioas is not None:
        hwpt.ioas.iopt.reserve((idev, pasid), reserved)
    hwpt.devices.append(idev)
    hwpt.users += 1
    idev.attached[pasid] = hwpt
    if pasid == IOMMU_NO_PASID:
        group.attach_domain(hwpt.domain)
    else:
        group.pasid_domains[pasid] = hwpt.domain
    return hwpt.id


def iommufd_device_detach(idev: IommufdDevice, pasid: int = IOMMU_NO_PASID) -> None:
    """Back to blocked DMA; an auto HWPT goes with its last device."""
    iommufd_hw_pagetable_detach(idev, pasid)


def iommufd_device_unbind(idev: IommufdDevice) -> None:
    """The driver lets go (the vfio device fd closed): detach, release ownership, free
    the id, and drop the driver's hold on the context."""
    idev.bound = False
    ictx = idev.ictx
    ictx.remove(idev)
    ictx.file_closed()


def iommufd_get_hw_info(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    """IOMMU_GET_HW_INFO: the driver's type and data (zero-filled past it, never past
    the user's ``data_len``, which comes back as the driver's length), the PASID width
    and the capabilities."""
    c = ucmd.cmd
    if c.flags & ~I.IOMMU_HW_INFO_FLAG_INPUT_TYPE or any(c.reserved):
        raise KernelError(errno.EOPNOTSUPP, "flags or reserved")
    idev = ictx.get(c.dev_id, IommufdDevice)
    in_type = c.out_data_type if c.flags & I.IOMMU_HW_INFO_FLAG_INPUT_TYPE else None
    info = idev.driver.hw_info(idev.dev, in_type)
    if c.data_len:
        ucmd.caller.copy_to_user(
            c.data_uptr, info.data[: c.data_len].ljust(c.data_len, b"\0")
        )
    caps = info.capabilities
    if idev.driver.capable(idev.dev, IOMMU_CAP_DIRTY_TRACKING):
        caps |= I.IOMMU_HW_CAP_DIRTY_TRACKING
    ucmd.respond(
        attrs.evolve(
            c,
            data_len=len(info.data),
            out_data_type=info.type,
            out_max_pasid_log2=info.max_pasid_log2,
            out_capabilities=caps,
        )
    )
    return 0
