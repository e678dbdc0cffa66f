"""`IommuGroup`: the smallest set of devices the IOMMU can isolate (drivers/iommu/iommu.c):
its reserved regions, the domain it is attached to, and who owns its DMA."""

from __future__ import annotations

import errno
from typing import Protocol

import attrs

from ..errors import KernelError
from ..idr import ida_alloc_min
from .domain import IommuDomain
from .driver import IommuDriver

MSI_WINDOW = (0xFEE00000, 0xFEEFFFFF, "msi")  # the x86 interrupt window
# a region firmware needs only until a driver takes over; it does not keep IOVA out
IOMMU_RESV_DIRECT_RELAXABLE = "direct-relaxable"
DMA_SAFE_DRIVERS = frozenset({"vfio-pci", "pci-stub", ""})


class IommuGroupDevice(Protocol):
    """A device as its IOMMU group sees it: which host driver it is bound to."""

    @property
    def driver(self) -> str: ...


@attrs.define(eq=False)
class IommuGroup:
    """An IOMMU group. ``noiommu`` groups (vfio's fake groups) translate nothing."""

    id: int
    noiommu: bool = False
    devices: list[IommuGroupDevice] = attrs.Factory(list)
    domain: IommuDomain | None = None
    owner: object | None = None
    reserved_regions: list[tuple[int, int, str]] = attrs.Factory(list)
    driver: IommuDriver = attrs.Factory(IommuDriver)  # the IOMMU behind the group
    # PASID -> domain (iommu_attach_device_pasid); PASID 0 is ``domain``
    pasid_domains: dict[int, IommuDomain] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        if not self.noiommu and not self.reserved_regions:
            self.reserved_regions.append(MSI_WINDOW)

    @property
    def name(self) -> str | None:
        return "vfio-noiommu" if self.noiommu else None

    def iova_reserved(self) -> list[tuple[int, int]]:
        """The reserved regions that keep IOVA out, as ``(start, last)``: all but the
        direct-relaxable ones, which vfio (``vfio_iommu_resv_exclude``) and iommufd
        (``iopt_table_enforce_dev_resv_regions``) both skip."""
        return [
            (start, last)
            for start, last, kind in self.reserved_regions
            if kind != IOMMU_RESV_DIRECT_RELAXABLE
        ]

    def viable(self) -> bool:
        """No device of the group is bound to a driver that does its own DMA."""
        return all(d.driver in DMA_SAFE_DRIVERS for d in self.devices)

    def claim_dma_owner(self, owner: object) -> None:
        """``iommu_group_claim_dma_owner``: EPERM when a kernel driver does DMA through
        the group, EBUSY when another user owns it."""
        if self.owner is owner:
            return
        if self.owner is not None:
            raise KernelError(
                errno.EBUSY, f"iommu group {self.id} is owned by another user"
            )
        if not self.viable():
            raise KernelError(
                errno.EPERM,
                f"iommu group {self.id} has a device bound to a host driver",
            )
        self.owner = owner

    def release_dma_owner(self, owner: object) -> None:
        if self.owner is owner:
            self.owner = None
            self.domain = None

    def attach_domain(self, domain: IommuDomain | None) -> None:
        self.domain = domain


@attrs.define(eq=False)
class IommuGroups:
    """Group ids: lowest free from 0."""

    groups: dict[int, IommuGroup] = attrs.Factory(dict)

    def alloc_id(self) -> int:
        return ida_alloc_min(self.groups)

    def add(self, group: IommuGroup) -> IommuGroup:
        if group.id in self.groups:
            raise ValueError(f"iommu group {group.id} exists")
        self.groups[group.id] = group
        return group
