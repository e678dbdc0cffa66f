"""`IommuDriver`: the kernel's ``struct iommu_ops`` -- what the IOMMU behind a group can
do. The base class is the host IOMMU vfiofs has always emulated (VT-d-like paging
domains, 4K/2M/1G pages, no dirty tracking, no nesting, no vIOMMU); the kernel's mock
driver (``iommu = "mock"``, drivers/iommu/iommufd/selftest.c) subclasses it in
vfiofs/iommufd/selftest.py.

Every method raises `KernelError` with the errno the kernel's driver returns. ``dev`` is
the device behind the group (a `PciDevice`, or a mock device); ``user_data`` is the
driver-specific blob of HWPT_ALLOC / VIOMMU_ALLOC (`UserData`, None without one). A
vIOMMU is iommufd's object: the driver fills its ``ops`` (``struct
iommufd_viommu_ops``), so it is typed loosely here, below iommufd.
"""

from __future__ import annotations

import errno
from typing import NamedTuple

from ..errors import KernelError
from .domain import IommuDomain
from .user_data import UserData

# enum iommu_cap
IOMMU_CAP_CACHE_COHERENCY = 0
IOMMU_CAP_DIRTY_TRACKING = 4

# enum iommufd_hwpt_alloc_flags (the driver sees them in domain_alloc_paging_flags)
NEST_PARENT = 1 << 0
DIRTY_TRACKING = 1 << 1
ALLOC_PASID = 1 << 3


class HwInfo(NamedTuple):
    """What IOMMU_GET_HW_INFO reports."""

    type: int
    data: bytes
    capabilities: int = 0
    max_pasid_log2: int = 0


class IommuDriver:
    """The host IOMMU (``struct iommu_ops``)."""

    name = "host"

    def __init__(self, address_width: int = 48) -> None:
        self.address_width = address_width

    def domain_alloc_paging_flags(
        self, dev: object, flags: int, user_data: UserData | None
    ) -> IommuDomain:
        """A paging domain. The host takes NEST_PARENT and PASID, nothing else."""
        if user_data is not None or flags & ~(NEST_PARENT | ALLOC_PASID):
            raise KernelError(errno.EOPNOTSUPP, "the host IOMMU has no such domain")
        return IommuDomain(self.address_width, owner=self, nest_parent=bool(flags & 1))

    def domain_alloc_nested(
        self, dev: object, parent: IommuDomain, flags: int, user_data: UserData | None
    ) -> IommuDomain:
        raise KernelError(errno.EOPNOTSUPP, "the host IOMMU does not nest")

    def capable(self, dev: object, cap: int) -> bool:
        return cap == IOMMU_CAP_CACHE_COHERENCY

    def hw_info(self, dev: object, in_type: int | None) -> HwInfo:
        """``ops->hw_info``; ``in_type`` is a requested type (FLAG_INPUT_TYPE)."""
        if in_type not in (None, 0):
            raise KernelError(errno.EOPNOTSUPP, f"hw info type {in_type}")
        return HwInfo(0, b"", 0, self.max_pasid_log2(dev))

    def max_pasid_log2(self, dev: object) -> int:
        """PASID bits of the device (its ``pasid`` topology key), 0 for none."""
        spec = getattr(dev, "spec", None)
        return int(getattr(spec, "pasid", 0) or 0)

    def attach_dev(self, domain: IommuDomain, dev: object) -> None:
        """``domain->ops->attach_dev``: refuse a domain of another driver."""
        if domain.owner is not None and domain.owner is not self:
            raise KernelError(errno.EINVAL, "domain of another IOMMU")

    def set_dev_pasid(
        self,
        domain: IommuDomain | None,
        dev: object,
        pasid: int,
        old: IommuDomain | None,
    ) -> None:
        """``set_dev_pasid``; ``domain`` None is the blocked domain."""
        if domain is not None:
            self.attach_dev(domain, dev)

    def get_viommu_size(self, dev: object, viommu_type: int) -> int:
        """Non-zero when the driver implements vIOMMUs of ``viommu_type``."""
        return 0

    def viommu_init(
        self, viommu: object, parent: IommuDomain, user_data: UserData | None
    ) -> None:
        raise KernelError(errno.EOPNOTSUPP, "no vIOMMU")
