"""Mirror of drivers/iommu/iommufd/hw_pagetable.c: HWPT_PAGING objects, each owning one
`IommuDomain` that mirrors its IOAS."""

from __future__ import annotations

import errno

import attrs

from ..abi import iommufd as I
from ..errors import KernelError
from ..ioctl_table import Ucmd
from ..iommu.domain import IommuDomain
from .ioas import Ioas
from .main import IommufdCtx, IommufdObject


@attrs.define(eq=False)
class HwptPaging(IommufdObject):
    """``struct iommufd_hwpt_paging``. ``auto`` ones are made by attaching a device to an
    IOAS and vanish with their last device."""

    ioas: Ioas | None = None
    domain: IommuDomain = attrs.Factory(IommuDomain)
    auto: bool = False
    devices: list[object] = attrs.Factory(list)

    def destroy(self) -> None:
        if self.ioas is not None:
            self.ioas.iopt.remove_domain(self.domain)
            self.ioas.users -= 1
            self.ioas = None


def iommufd_hwpt_paging_alloc(
    ictx: IommufdCtx, ioas: Ioas, *, auto: bool
) -> HwptPaging:
    hwpt = HwptPaging(
        ictx, ioas=ioas, domain=IommuDomain(ictx.address_width), auto=auto
    )
    ioas.iopt.add_domain(
        hwpt.domain
    )  # may fail (RLIMIT_MEMLOCK) before anything changes
    ioas.users += 1
    ictx.add(hwpt)
    return hwpt


def iommufd_hwpt_alloc(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    from .device import IommufdDevice

    c = ucmd.cmd
    if c.reserved:
        raise KernelError(errno.EOPNOTSUPP, "reserved")
    if (c.data_type == I.IOMMU_HWPT_DATA_NONE) != (c.data_len == 0):
        raise KernelError(errno.EINVAL, "data_type and data_len disagree")
    ictx.get(c.dev_id, IommufdDevice)
    pt = ictx.objects.get(c.pt_id)
    if not isinstance(pt, Ioas):
        # kernel: iommufd_hwpt_alloc() answers EINVAL for a bad pt_id, not ENOENT
        raise KernelError(errno.EINVAL, f"pt_id {c.pt_id} is not an IOAS")
    if (
        c.flags & ~I.IOMMU_HWPT_ALLOC_NEST_PARENT
        or c.data_type != I.IOMMU_HWPT_DATA_NONE
    ):
        raise KernelError(errno.EOPNOTSUPP, "only plain paging domains are emulated")
    hwpt = iommufd_hwpt_paging_alloc(ictx, pt, auto=False)
    ucmd.respond(attrs.evolve(c, out_hwpt_id=hwpt.id))
    return 0
