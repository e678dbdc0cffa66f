"""Mirror of drivers/iommu/iommufd/device.c: the DEVICE object, and the API the vfio core
(and the selftest) use to bind, attach, replace, detach and unbind a device
(``iommufd_device_bind`` ...), for the whole device (PASID 0, ``IOMMU_NO_PASID``) or
one PASID of it. GET_HW_INFO asks the device's IOMMU driver.

The iommufd_access half of device.c lives in access.py.
"""

from __future__ import annotations

import errno
from typing import Any

import attrs

from ..abi import iommufd as I
from ..errors import KernelError
from ..ioctl_table import Ucmd
from ..iommu.driver import IommuDriver
from ..iommu.group import IommuGroup
from .hw_pagetable import Hwpt, HwptNested, HwptPaging, iommufd_hwpt_paging_alloc
from .ioas import Ioas
from .main import IommufdCtx, IommufdObject

IOMMU_NO_PASID = 0
U64_MAX = (1 << 64) - 1


@attrs.define(eq=False)
class IommufdDevice(IommufdObject):
    """``struct iommufd_device``: one device bound into a context. ``attached`` maps a
    PASID (0 for the whole device) to its HWPT."""

    group: IommuGroup | None = None
    dev: object = None
    attached: dict[int, Hwpt] = attrs.Factory(dict)
    vdev: Any = None  # its vDEVICE, if a vIOMMU names it
    bound: bool = True  # the vfio driver's reference: DESTROY says EBUSY

    @property
    def hwpt(self) -> Hwpt | None:
        return self.attached.get(IOMMU_NO_PASID)

    @property
    def driver(self) -> IommuDriver:
        assert self.group is not None
        return self.group.driver

    def destroy(self) -> None:
        if self.vdev is not None:
            # iommufd_device_pre_destroy(): a vDEVICE cannot outlive its device
            self.ictx.remove(self.vdev)
        for pasid in sorted(self.attached, reverse=True):
            iommufd_device_detach(self, pasid)
        if self.group is not None:
            self.group.release_dma_owner(self.ictx)


def iommufd_device_bind(
    ictx: IommufdCtx, group: IommuGroup, dev: object
) -> IommufdDevice:
    """Claim the group's DMA ownership for ``ictx`` (EPERM/EBUSY) and make the DEVICE."""
    group.claim_dma_owner(ictx)
    idev = IommufdDevice(ictx, group=group, dev=dev)
    ictx.add(idev)
    ictx.file_opened()  # the vfio device fd keeps the context
    return idev


def _resolve_pt(idev: IommufdDevice, pt_id: int) -> tuple[Hwpt | None, Ioas | None]:
    """An IOAS (its auto HWPT, maybe none yet) or a HWPT. ENOENT / EINVAL."""
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


def _reserved(idev: IommufdDevice, hwpt: Hwpt) -> list[tuple[int, int]]:
    """The device's reserved regions plus what lies outside the domain's aperture."""
    assert idev.group is not None
    out = [
        (lo, hi)
        for lo, hi, kind in idev.group.reserved_regions
        if kind != "direct-relaxable"
    ]
    d = hwpt.domain
    if d.aperture_start:
        out.append((0, d.aperture_start - 1))
    if d.aperture_end < U64_MAX:
        out.append((d.aperture_end + 1, U64_MAX))
    return out


def _pasid_compat(idev: IommufdDevice, hwpt: Hwpt, pasid: int) -> None:
    """iommufd_hwpt_pasid_compat(): PASID attachments need PASID-capable HWPTs on both
    the PASID and the whole device (EINVAL)."""
    if pasid == IOMMU_NO_PASID:
        if not hwpt.pasid_compat and any(p for p in idev.attached if p):
            raise KernelError(
                errno.EINVAL, "PASIDs are attached: need an ALLOC_PASID HWPT"
            )
    else:
        if not hwpt.pasid_compat:
            raise KernelError(
                errno.EINVAL, "the HWPT was not allocated with ALLOC_PASID"
            )
        whole = idev.attached.get(IOMMU_NO_PASID)
        if whole is not None and not whole.pasid_compat:
            raise KernelError(
                errno.EINVAL, "the device's own HWPT is not PASID-capable"
            )


def iommufd_device_attach(
    idev: IommufdDevice,
    pt_id: int,
    pasid: int = IOMMU_NO_PASID,
    *,
    mode: str = "either",
) -> int:
    """Attach to an IOAS (an auto HWPT of it, reused or new) or to a HWPT. ``mode``
    "attach" (iommufd_device_attach: EINVAL if attached elsewhere), "replace"
    (iommufd_device_replace: EINVAL if not attached) or "either" (what vfio does).
    Returns the HWPT id."""
    ictx = idev.ictx
    assert idev.group is not None
    driver = idev.driver
    if pasid != IOMMU_NO_PASID:
        max_log2 = driver.max_pasid_log2(idev.dev)
        if pasid >= 1 << max_log2 or not max_log2:
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
            driver.set_dev_pasid(hwpt.domain, idev.dev, pasid, old)
    if ioas is not None:
        # iopt_table_enforce_dev_resv_regions(): nothing mapped or allowed there
        probe = hwpt or _probe_hwpt(idev)
        for lo, hi in _reserved(idev, probe):
            if ioas.iopt.overlapping(lo, hi) or any(
                a <= hi and lo <= b for a, b in ioas.iopt.allowed or ()
            ):
                raise KernelError(
                    errno.EADDRINUSE, f"reserved {lo:#x}-{hi:#x} is mapped or allowed"
                )
    if hwpt is None:
        assert ioas is not None
        flags = I.IOMMU_HWPT_ALLOC_PASID if pasid != IOMMU_NO_PASID else 0
        hwpt = iommufd_hwpt_paging_alloc(ictx, ioas, idev, flags, auto=True)
        try:
            _pasid_compat(idev, hwpt, pasid)
            driver.attach_dev(hwpt.domain, idev.dev)
        except KernelError:
            ictx.remove(hwpt)
            raise
    if old is not None:
        _detach(idev, pasid)
    if isinstance(hwpt, HwptPaging) and hwpt.ioas is not None:
        hwpt.ioas.iopt.reserved[(idev, pasid)] = _reserved(idev, hwpt)
    hwpt.devices.append(idev)
    hwpt.users += 1
    idev.attached[pasid] = hwpt
    if pasid == IOMMU_NO_PASID:
        idev.group.attach_domain(hwpt.domain)
    else:
        idev.group.pasid_domains[pasid] = hwpt.domain
    return hwpt.id


def _probe_hwpt(idev: IommufdDevice) -> Hwpt:
    """A throwaway HWPT with the driver's default domain, to learn its aperture."""
    return Hwpt(
        idev.ictx, domain=idev.driver.domain_alloc_paging_flags(idev.dev, 0, None)
    )


def _detach(idev: IommufdDevice, pasid: int) -> None:
    from .eventq import iommufd_auto_response_faults

    hwpt = idev.attached.pop(pasid, None)
    if hwpt is None:
        return
    iommufd_auto_response_faults(hwpt, idev, pasid)
    hwpt.devices.remove(idev)
    hwpt.users -= 1
    if isinstance(hwpt, HwptPaging) and hwpt.ioas is not None:
        hwpt.ioas.iopt.reserved.pop((idev, pasid), None)
    if idev.group is not None:
        if pasid == IOMMU_NO_PASID:
            idev.group.attach_domain(None)
        else:
            idev.group.pasid_domains.pop(pasid, None)
            idev.driver.set_dev_pasid(None, idev.dev, pasid, hwpt.domain)
    if isinstance(hwpt, HwptPaging) and hwpt.auto and not hwpt.devices:
        hwpt.ictx.remove(hwpt)


def iommufd_device_detach(idev: IommufdDevice, pasid: int = IOMMU_NO_PASID) -> None:
    """Back to blocked DMA; an auto HWPT goes with its last device."""
    _detach(idev, pasid)


def iommufd_device_unbind(idev: IommufdDevice) -> None:
    """The vfio device fd closed: detach, release ownership, free the id."""
    idev.bound = False
    ictx = idev.ictx
    ictx.remove(idev)
    ictx.file_closed()


def iommufd_get_hw_info(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    if c.flags & ~I.IOMMU_HW_INFO_FLAG_INPUT_TYPE or any(c.reserved):
        raise KernelError(errno.EOPNOTSUPP, "flags or reserved")
    idev = ictx.get(c.dev_id, IommufdDevice)
    in_type = c.out_data_type if c.flags & I.IOMMU_HW_INFO_FLAG_INPUT_TYPE else None
    info = idev.driver.hw_info(idev.dev, in_type)
    if c.data_len:
        # the driver's data, zero-filled past it, never past the user's data_len
        ucmd.caller.copy_to_user(
            c.data_uptr, info.data[: c.data_len].ljust(c.data_len, b"\0")
        )
    caps = info.capabilities
    from ..iommu.driver import IOMMU_CAP_DIRTY_TRACKING

    if idev.driver.capable(idev.dev, IOMMU_CAP_DIRTY_TRACKING):
        caps |= I.IOMMU_HW_CAP_DIRTY_TRACKING
    ucmd.respond(
        attrs.evolve(
            c,
            data_len=len(info.data),  # what the kernel has, whatever the user gave
            out_data_type=info.type,
            out_max_pasid_log2=info.max_pasid_log2,
            out_capabilities=caps,
        )
    )
    return 0
