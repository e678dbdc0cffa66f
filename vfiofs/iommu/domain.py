"""`IommuDomain`: one page table plus what the kernel's ``struct iommu_domain`` tells its
users: the aperture and the supported page sizes."""

from __future__ import annotations

import attrs

from ..uaccess import AddressSpace
from .pagetable import IoPageTable, Translation

PGSIZE_BITMAP = (1 << 12) | (1 << 21) | (1 << 30)  # 4K | 2M | 1G, as VT-d


@attrs.define(eq=False)
class IommuDomain:
    """An IOMMU translation context; groups attached to it translate through it."""

    address_width: int = 48
    pgsize_bitmap: int = PGSIZE_BITMAP
    enforce_cache_coherency: bool = True
    pagetable: IoPageTable = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.pagetable = IoPageTable(self.address_width)

    @property
    def aperture_start(self) -> int:
        return 0

    @property
    def aperture_end(self) -> int:
        return (1 << self.address_width) - 1

    def map(
        self, iova: int, size: int, owner: AddressSpace, vaddr: int, prot: int
    ) -> None:
        self.pagetable.map(iova, size, owner, vaddr, prot)

    def unmap(self, iova: int, size: int) -> int:
        return self.pagetable.unmap(iova, size)

    def translate(self, iova: int) -> Translation | None:
        return self.pagetable.translate(iova)
