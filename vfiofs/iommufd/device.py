"""Mirror of drivers/iommu/iommufd/device.c: the API the vfio core uses to bind, attach,
detach and unbind a device (``iommufd_device_bind`` ...), and IOMMU_GET_HW_INFO. The
DEVICE struct is in iommufd_private.py."""

from __future__ import annotations

import errno

import attrs

from ..abi import iommufd as I
from ..devices.pci import PciDevice
from ..errors import KernelError
from ..ioctl_table import Ucmd
from ..iommu.group import IommuGroup
from ..iommu.iova import iova_reserved_hit
from .iommufd_private import (
    HwptPaging,
    Ioas,
    IommufdCtx,
    IommufdDevice,
    iommufd_hw_pagetable_detach,
    iommufd_hwpt_paging_alloc,
)


def iommufd_device_bind(
    ictx: IommufdCtx, group: IommuGroup, dev: PciDevice
) -> IommufdDevice:
    """Claim the group's DMA ownership for ``ictx`` (EPERM/EBUSY) and make the DEVICE."""
    group.claim_dma_owner(ictx)
    idev = IommufdDevice(ictx, group=group, dev=dev)
    ictx.add(idev)
    ictx.devices_bound += 1
    return idev


def iommufd_device_attach(idev: IommufdDevice, pt_id: int) -> int:
    """Attach to an IOAS (an auto HWPT of it, reused or new) or to a HWPT; replaces an
    existing attachment. Returns the HWPT id used."""
    ictx = idev.ictx
    pt = ictx.objects.get(pt_id)
    if pt is None:
        raise KernelError(errno.ENOENT, f"no object {pt_id}")
    if isinstance(pt, Ioas):
        hwpt = next(
            (
                h
                for h in ictx.objects.values()
                if isinstance(h, HwptPaging) and h.auto and h.ioas is pt
            ),
            None,
        )
        ioas = pt
    elif isinstance(pt, HwptPaging) and pt.ioas is not None:
        hwpt, ioas = pt, pt.ioas
    else:
        raise KernelError(errno.EINVAL, f"object {pt_id} is neither an IOAS nor a HWPT")
    assert ioas is not None and idev.group is not None
    if idev.hwpt is not None and idev.hwpt is hwpt:
        return hwpt.id
    reserved = idev.group.iova_reserved()
    for lo, hi in reserved:
        if ioas.iopt.overlapping(lo, hi) or iova_reserved_hit(
            ioas.iopt.allowed or (), lo, hi
        ):
            raise KernelError(
                errno.EADDRINUSE, f"reserved {lo:#x}-{hi:#x} is mapped or allowed"
            )
    if hwpt is None:
        hwpt = iommufd_hwpt_paging_alloc(ictx, ioas, auto=True)
    if idev.hwpt is not None:
        iommufd_hw_pagetable_detach(idev)
    ioas.iopt.reserved[idev] = [
        *reserved,
        (1 << hwpt.domain.address_width, (1 << 64) - 1),
    ]
    hwpt.devices.append(idev)
    hwpt.users += 1
    idev.hwpt = hwpt
    idev.group.attach_domain(hwpt.domain)
    return hwpt.id


def iommufd_device_detach(idev: IommufdDevice) -> None:
    """Back to blocked DMA; an auto HWPT goes with its last device."""
    iommufd_hw_pagetable_detach(idev)


def iommufd_device_unbind(idev: IommufdDevice) -> None:
    """The vfio device fd closed: detach, release ownership, free the id."""
    idev.bound = False
    ictx = idev.ictx
    ictx.remove(idev)
    ictx.unbound()


def iommufd_get_hw_info(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    if c.flags & ~I.IOMMU_HW_INFO_FLAG_INPUT_TYPE or any(c.reserved):
        raise KernelError(errno.EOPNOTSUPP, "flags or reserved")
    ictx.get(c.dev_id, IommufdDevice)
    if c.data_len:
        ucmd.caller.copy_to_user(
            c.data_uptr, bytes(c.data_len)
        )  # no driver data: zero-fill
    ucmd.respond(
        attrs.evolve(
            c,
            data_len=0,
            out_data_type=I.IOMMU_HW_INFO_TYPE_NONE,
            out_max_pasid_log2=0,
            out_capabilities=0,
        )
    )
    return 0
