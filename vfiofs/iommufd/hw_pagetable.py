"""Mirror of drivers/iommu/iommufd/hw_pagetable.c: IOMMU_HWPT_ALLOC. The HWPT_PAGING
struct and its allocation, which device attach uses too, are in iommufd_private.py."""

from __future__ import annotations

import errno

import attrs

from ..abi import iommufd as I
from ..errors import KernelError
from ..ioctl_table import Ucmd
from .iommufd_private import Ioas, IommufdCtx, IommufdDevice, iommufd_hwpt_paging_alloc


def iommufd_hwpt_alloc(ictx: IommufdCtx, ucmd: Ucmd) -> int:
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
