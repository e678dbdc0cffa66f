"""Mirror of drivers/iommu/iommufd/io_pagetable.c: an IOAS's areas, reserved and allowed
ranges, and the domains that mirror it.

Each IOAS_MAP / IOAS_COPY makes one `Area`; areas are never split (an unmap must cover
whole areas). Every area is mapped into the page table of every attached domain, so device
DMA translates through it; attaching a domain replays the areas (pinning, which charges
RLIMIT_MEMLOCK).
"""

from __future__ import annotations

import bisect
import errno

import attrs

from ..abi.iommufd import IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE
from ..errors import KernelError
from ..iommu.domain import IommuDomain
from ..iommu.iova import iova_holes, iova_overlaps, iova_reserved_hit
from ..iommu.pagetable import IOMMU_READ, IOMMU_WRITE
from ..uaccess import AddressSpace, account_locked_vm

U64_MAX = (1 << 64) - 1
PAGE = 4096


@attrs.define(eq=False)
class Area:
    """``struct iopt_area`` with its ``iopt_pages``: one IOAS_MAP / IOAS_COPY.

    ``account`` is the pages' account mode: False (``IOPT_PAGES_ACCOUNT_NONE``) when the
    mapper had CAP_IPC_LOCK (``iopt_alloc_pages``), so pinning charges nothing.
    """

    iova: int
    length: int
    mm: AddressSpace
    user_va: int
    prot: int
    account: bool = True

    @property
    def last(self) -> int:
        return self.iova + self.length - 1


@attrs.define(eq=False)
class IoPagetable:
    """``struct io_pagetable``."""

    areas: list[Area] = attrs.Factory(list)  # sorted by iova
    reserved: dict[object, list[tuple[int, int]]] = attrs.Factory(
        dict
    )  # owner -> ranges
    allowed: list[tuple[int, int]] | None = None
    domains: list[IommuDomain] = attrs.Factory(list)
    huge_pages: bool = True

    @property
    def iova_alignment(self) -> int:
        return PAGE if self.domains else 1

    def reserved_ranges(self) -> list[tuple[int, int]]:
        """Every reserved range, of every owner (the reserved interval tree)."""
        return [r for ranges in self.reserved.values() for r in ranges]

    def usable_ranges(self) -> list[tuple[int, int]]:
        """[0, U64_MAX] minus the reserved ranges (IOAS_IOVA_RANGES)."""
        return iova_holes(0, U64_MAX, self.reserved_ranges())

    def overlapping(self, iova: int, last: int) -> list[Area]:
        """The areas that meet ``[iova, last]`` (``iopt_area_iter_first``)."""
        return iova_overlaps(self.areas, iova, last)

    def hits_reserved(self, iova: int, last: int) -> bool:
        return iova_reserved_hit(self.reserved_ranges(), iova, last)

    def alloc_iova(self, length: int, user_va: int) -> int:
        """Pick an IOVA (iopt_alloc_iova): never 0, aligned, inside the allowed ranges."""
        align = max(self.iova_alignment, PAGE)
        size_align = 1 << max(length - 1, 1).bit_length()
        va_align = user_va & -user_va if user_va else size_align
        align = max(
            align, min(size_align, va_align, 1 << 30 if self.huge_pages else PAGE)
        )
        ranges = self.allowed if self.allowed is not None else self.usable_ranges()
        for lo, hi in ranges:
            start = max(lo, align)
            start = (start + align - 1) // align * align
            while start + length - 1 <= hi:
                last = start + length - 1
                clash = self.overlapping(start, last)
                if not clash and not self.hits_reserved(start, last):
                    return start
                nxt = max([a.last + 1 for a in clash] + [start + align])
                start = (nxt + align - 1) // align * align
        raise KernelError(errno.ENOSPC, "no free IOVA range fits")

    def map(
        self,
        iova: int,
        length: int,
        mm: AddressSpace,
        user_va: int,
        prot: int,
        *,
        account: bool,
    ) -> Area:
        """Add an area (caller checked alignment and overlap) and map it into every domain,
        charging the pinned pages unless ``account`` is False."""
        area = Area(iova, length, mm, user_va, prot, account)
        if self.domains:
            self._pin(area)
        for d in self.domains:
            d.map(iova, length, mm, user_va, _iommu_prot(prot))
        bisect.insort(self.areas, area, key=lambda a: a.iova)
        return area

    @staticmethod
    def _pin(area: Area) -> None:
        """Pinning an area's pages charges them (ENOMEM past RLIMIT_MEMLOCK)."""
        if area.account:
            account_locked_vm(area.mm, area.length)

    @staticmethod
    def _unpin(area: Area) -> None:
        if area.account:
            account_locked_vm(area.mm, area.length, inc=False)

    def remove(self, area: Area) -> None:
        for d in self.domains:
            d.unmap(area.iova, area.length)
        if self.domains:
            self._unpin(area)
        self.areas.remove(area)

    def add_domain(self, domain: IommuDomain) -> None:
        """Load every area into a newly attached domain (pinning on the first one)."""
        first = not self.domains
        if first:
            pinned: list[Area] = []
            try:
                for a in self.areas:
                    self._pin(a)
                    pinned.append(a)
            except KernelError:
                for a in pinned:
                    self._unpin(a)
                raise
        for a in self.areas:
            domain.map(a.iova, a.length, a.mm, a.user_va, _iommu_prot(a.prot))
        self.domains.append(domain)

    def remove_domain(self, domain: IommuDomain) -> None:
        for a in self.areas:
            domain.unmap(a.iova, a.length)
        self.domains.remove(domain)
        if not self.domains:
            for a in self.areas:
                self._unpin(a)


def _iommu_prot(prot: int) -> int:
    return (IOMMU_READ if prot & IOMMU_IOAS_MAP_READABLE else 0) | (
        IOMMU_WRITE if prot & IOMMU_IOAS_MAP_WRITEABLE else 0
    )
