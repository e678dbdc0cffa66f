"""`IommuDomain`: one page table plus what the kernel's ``struct iommu_domain`` tells its
users: the aperture, the supported page sizes, who made it (``owner``, the driver),
whether it can be a nesting parent or track dirty pages, and the fault handler.

A NESTED domain (`NestedDomain`) translates through its parent: vfiofs keeps no guest
stage-1 table, so stage 1 is the identity and DMA reaches what the parent (stage 2)
maps; dirty bits land in the parent, as hardware sets them in stage 2.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator

import attrs

from ..errors import KernelError
from ..uaccess import MemorySource
from .pagetable import IoPageTable, Mapping, PageTable, Translation
from .user_data import UserDataArray

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
    owner: object = None  # the IommuDriver that allocated it (domain->owner)
    nest_parent: bool = False
    dirty_ops: bool = False  # the domain can track dirty pages (domain->dirty_ops)
    type: str = IOMMU_DOMAIN_PAGING
    # (group, iova, write): a DMA fault becomes a page request (IOMMU_HWPT_FAULT_ID)
    fault_handler: Callable[[object, int, bool], None] | None = None
    pagetable: PageTable | None = attrs.field(init=False)
    # the table DMA writes mark dirty: set while dirty tracking is on, else None
    dirty_pt: PageTable | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.pagetable = self.make_pagetable()

    def make_pagetable(self) -> PageTable | None:
        return IoPageTable(self.address_width)

    @property
    def pt(self) -> PageTable:
        """The domain's own page table (a nested domain has none)."""
        if self.pagetable is None:
            raise KernelError(errno.EINVAL, f"a {self.type} domain has no page table")
        return self.pagetable

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

    def map(
        self, iova: int, size: int, owner: MemorySource, vaddr: int, prot: int
    ) -> None:
        self.pt.map(iova, size, owner, vaddr, prot)

    def unmap(self, iova: int, size: int) -> int:
        return self.pt.unmap(iova, size)

    def translate(self, iova: int) -> Translation | None:
        return self.pt.translate(iova)

    def walk(self) -> Iterator[Mapping]:
        """Every mapping DMA through the domain reaches, in IOVA order."""
        return self.pt.walk()

    def cache_invalidate_user(self, array: UserDataArray) -> None:
        """``domain->ops->cache_invalidate_user``: the driver's invalidation entries,
        counting the ones handled in ``array.done``. A driver without it: EOPNOTSUPP."""
        raise KernelError(errno.EOPNOTSUPP, "the domain takes no invalidation")

    # --- dirty tracking (struct iommu_dirty_ops) ---------------------------------------

    @property
    def dirty_tracking(self) -> bool:
        return self.dirty_pt is not None

    def dirty_table(self) -> PageTable | None:
        """The table DMA writes through this domain mark dirty (None: not tracking)."""
        return self.dirty_pt

    def set_dirty_tracking(self, enable: bool) -> None:
        """Turn tracking on (clearing old bits) or off. EINVAL without dirty_ops."""
        if enable and not self.dirty_ops:
            raise KernelError(errno.EINVAL, "the domain cannot track dirty pages")
        if enable == self.dirty_tracking:
            return
        self.pt.set_dirty_tracking(enable)
        self.dirty_pt = self.pt if enable else None

    def read_and_clear_dirty(
        self, iova: int, size: int, *, clear: bool
    ) -> list[tuple[int, int]]:
        """The dirty IO pages in the range; EINVAL while tracking is off."""
        if not self.dirty_tracking:
            raise KernelError(errno.EINVAL, "dirty tracking is off")
        return self.pt.read_and_clear_dirty(iova, size, clear=clear)


@attrs.define(eq=False)
class NestedDomain(IommuDomain):
    """A user-managed stage-1 domain over a nesting parent (IOMMU_DOMAIN_NESTED)."""

    parent: IommuDomain | None = None
    type: str = IOMMU_DOMAIN_NESTED

    def make_pagetable(self) -> PageTable | None:
        return None

    def map(
        self, iova: int, size: int, owner: MemorySource, vaddr: int, prot: int
    ) -> None:
        raise KernelError(errno.EINVAL, "a nested domain is managed by its user")

    def unmap(self, iova: int, size: int) -> int:
        raise KernelError(errno.EINVAL, "a nested domain is managed by its user")

    def translate(self, iova: int) -> Translation | None:
        return None if self.parent is None else self.parent.translate(iova)

    def walk(self) -> Iterator[Mapping]:
        return iter(()) if self.parent is None else self.parent.walk()

    def dirty_table(self) -> PageTable | None:
        """Writes dirty the parent's (stage 2) pages."""
        return None if self.parent is None else self.parent.dirty_pt
