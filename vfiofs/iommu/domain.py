"""`IommuDomain`: one page table plus what the kernel's ``struct iommu_domain`` tells its
users: the aperture, the supported page sizes, who made it (``owner``, the driver),
whether it can be a nesting parent or track dirty pages, and the fault handler.

A NESTED domain (`NestedDomain`) translates through its parent: vfiofs keeps no guest
stage-1 table, so stage 1 is the identity and DMA reaches what the parent (stage 2)
maps; dirty bits land in the parent, as hardware sets them in stage 2.
"""

from __future__ import annotations

import errno
from typing import Any

import attrs

from ..errors import KernelError
from .pagetable import IoPageTable, Translation

PGSIZE_BITMAP = (1 << 12) | (1 << 21) | (1 << 30)  # 4K | 2M | 1G, as VT-d

IOMMU_DOMAIN_PAGING = "paging"
IOMMU_DOMAIN_NESTED = "nested"


@attrs.define(eq=False)
class IommuDomain:
    """An IOMMU translation context; groups attached to it translate through it."""

    address_width: int = 48
    pgsize_bitmap: int = PGSIZE_BITMAP
    enforce_cache_coherency: bool = True
    aperture: tuple[int, int] | None = None  # default: [0, 2**address_width - 1]
    owner: Any = None  # the IommuDriver that allocated it (domain->owner)
    nest_parent: bool = False
    dirty_ops: bool = False  # the domain can track dirty pages (domain->dirty_ops)
    type: str = IOMMU_DOMAIN_PAGING
    fault_handler: Any = None  # the HWPT whose fault queue takes its page faults
    pagetable: Any = attrs.field(init=False)
    # the table DMA writes mark dirty: set while dirty tracking is on, else None
    dirty_pt: Any = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.pagetable = self.make_pagetable()

    def make_pagetable(self) -> Any:
        return IoPageTable(self.address_width)

    @property
    def aperture_start(self) -> int:
        return 0 if self.aperture is None else self.aperture[0]

    @property
    def aperture_end(self) -> int:
        if self.aperture is None:
            return (1 << self.address_width) - 1
        return self.aperture[1]

    @property
    def min_page_size(self) -> int:
        """The smallest IO page: what IOVAs and lengths must be aligned to."""
        return self.pgsize_bitmap & -self.pgsize_bitmap

    def map(self, iova: int, size: int, owner: Any, vaddr: int, prot: int) -> None:
        self.pagetable.map(iova, size, owner, vaddr, prot)

    def unmap(self, iova: int, size: int) -> int:
        return int(self.pagetable.unmap(iova, size))

    def translate(self, iova: int) -> Translation | None:
        t: Translation | None = self.pagetable.translate(iova)
        return t

    # --- dirty tracking (struct iommu_dirty_ops) ---------------------------------------

    @property
    def dirty_tracking(self) -> bool:
        return self.dirty_pt is not None

    def dirty_table(self) -> Any:
        """The table DMA writes through this domain mark dirty (None: not tracking)."""
        return self.dirty_pt

    def set_dirty_tracking(self, enable: bool) -> None:
        """Turn tracking on (clearing old bits) or off. EINVAL without dirty_ops."""
        if enable and not self.dirty_ops:
            raise KernelError(errno.EINVAL, "the domain cannot track dirty pages")
        if enable == self.dirty_tracking:
            return
        self.pagetable.set_dirty_tracking(enable)
        self.dirty_pt = self.pagetable if enable else None

    def read_and_clear_dirty(
        self, iova: int, size: int, *, clear: bool
    ) -> list[tuple[int, int]]:
        """The dirty IO pages in the range; EINVAL while tracking is off."""
        if not self.dirty_tracking:
            raise KernelError(errno.EINVAL, "dirty tracking is off")
        out: list[tuple[int, int]] = self.pagetable.read_and_clear_dirty(
            iova, size, clear=clear
        )
        return out


@attrs.define(eq=False)
class NestedDomain(IommuDomain):
    """A user-managed stage-1 domain over a nesting parent (IOMMU_DOMAIN_NESTED)."""

    parent: IommuDomain | None = None
    type: str = IOMMU_DOMAIN_NESTED

    def make_pagetable(self) -> Any:
        return None

    def map(self, iova: int, size: int, owner: Any, vaddr: int, prot: int) -> None:
        raise KernelError(errno.EINVAL, "a nested domain is managed by its user")

    def unmap(self, iova: int, size: int) -> int:
        raise KernelError(errno.EINVAL, "a nested domain is managed by its user")

    def translate(self, iova: int) -> Translation | None:
        return None if self.parent is None else self.parent.translate(iova)

    def dirty_table(self) -> Any:
        """Writes dirty the parent's (stage 2) pages."""
        return None if self.parent is None else self.parent.dirty_pt
