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
from typing import Any

import attrs

from ..errors import KernelError
from ..iommu.domain import IommuDomain
from ..iommu.pagetable import IOMMU_READ, IOMMU_WRITE

U64_MAX = (1 << 64) - 1
PAGE = 4096


@attrs.define(eq=False)
class Area:
    """``struct iopt_area``: ``mm`` holds the bytes (a process's memory, or a mapped
    file for IOAS_MAP_FILE, ``user_va`` then a file offset); ``acct`` is whose
    RLIMIT_MEMLOCK the pinned pages are charged to (``mm`` unless a file)."""

    iova: int
    length: int
    mm: Any  # an AddressSpace, or a uaccess.FileMemory
    user_va: int
    prot: int
    acct: Any = None
    num_accesses: int = 0  # iommufd_access pins on this area

    @property
    def account(self) -> Any:
        return self.mm if self.acct is None else self.acct

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
    accesses: list[Any] = attrs.Factory(list)  # attached iommufd_access

    @property
    def iova_alignment(self) -> int:
        """iopt_calculate_iova_alignment(): the largest smallest-page of the domains."""
        return max((d.min_page_size for d in self.domains), default=1)

    def reserved_ranges(self) -> list[tuple[int, int]]:
        out = sorted(r for ranges in self.reserved.values() for r in ranges)
        merged: list[tuple[int, int]] = []
        for lo, hi in out:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        return merged

    def usable_ranges(self) -> list[tuple[int, int]]:
        """[0, U64_MAX] minus the reserved ranges (IOAS_IOVA_RANGES)."""
        out, cur = [], 0
        for lo, hi in self.reserved_ranges():
            if lo > cur:
                out.append((cur, lo - 1))
            cur = max(cur, hi + 1)
        if cur <= U64_MAX:
            out.append((cur, U64_MAX))
        return out

    def overlapping(self, iova: int, last: int) -> list[Area]:
        i = bisect.bisect_left(self.areas, iova, key=lambda a: a.last)
        out = []
        while i < len(self.areas) and self.areas[i].iova <= last:
            out.append(self.areas[i])
            i += 1
        return out

    def hits_reserved(self, iova: int, last: int) -> bool:
        return any(lo <= last and iova <= hi for lo, hi in self.reserved_ranges())

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
        mm: Any,
        user_va: int,
        prot: int,
        acct: Any = None,
    ) -> Area:
        """Add an area (caller checked alignment and overlap) and map it into every domain,
        charging the pinned pages."""
        area = Area(iova, length, mm, user_va, prot, acct)
        if acct is not None:  # a file's memory: closed with its last area
            mm.areas = getattr(mm, "areas", 0) + 1
        if self.domains:
            self._pin(area)
        for d in self.domains:
            d.map(iova, length, mm, user_va, _iommu_prot(prot))
        bisect.insort(self.areas, area, key=lambda a: a.iova)
        return area

    def _pin(self, area: Area) -> None:
        mm = area.account
        limit = mm.memlock_limit()
        if limit >= 0 and mm.locked_vm + area.length > limit:
            raise KernelError(errno.ENOMEM, "RLIMIT_MEMLOCK exceeded")
        mm.locked_vm += area.length

    def remove(self, area: Area) -> None:
        for d in self.domains:
            d.unmap(area.iova, area.length)
        if self.domains:
            area.account.locked_vm -= area.length
        self.areas.remove(area)
        if area.acct is not None:
            area.mm.areas -= 1
            if not area.mm.areas:
                area.mm.close()

    def unmap_area(self, area: Area) -> None:
        """Remove an area for IOAS_UNMAP: access holders that pinned part of it are
        told to unpin first; EBUSY if one does not (iopt_unmap_iova_range)."""
        if area.num_accesses:
            from .access import iommufd_access_notify_unmap

            iommufd_access_notify_unmap(self, area.iova, area.length)
            if area.num_accesses:
                raise KernelError(errno.EBUSY, "pages are pinned by an access")
        self.remove(area)

    def add_domain(self, domain: IommuDomain) -> None:
        """Load every area into a newly attached domain (pinning on the first one).
        The domain's aperture becomes reserved; EADDRINUSE when an area lies outside
        it or is not aligned to the domain's page size (iopt_table_add_domain)."""
        lo, hi, align = domain.aperture_start, domain.aperture_end, domain.min_page_size
        for a in self.areas:
            if a.iova < lo or a.last > hi or a.iova % align or a.length % align:
                raise KernelError(
                    errno.EADDRINUSE, f"area {a.iova:#x}+{a.length:#x} does not fit"
                )
        outside = [(0, lo - 1)] if lo else []
        if hi < U64_MAX:
            outside.append((hi + 1, U64_MAX))
        first = not self.domains
        if first:
            pinned: list[Area] = []
            try:
                for a in self.areas:
                    self._pin(a)
                    pinned.append(a)
            except KernelError:
                for a in pinned:
                    a.account.locked_vm -= a.length
                raise
        for a in self.areas:
            domain.map(a.iova, a.length, a.mm, a.user_va, _iommu_prot(a.prot))
        self.domains.append(domain)
        if outside:
            self.reserved[domain] = outside

    def remove_domain(self, domain: IommuDomain) -> None:
        for a in self.areas:
            domain.unmap(a.iova, a.length)
        self.domains.remove(domain)
        self.reserved.pop(domain, None)
        if not self.domains:
            for a in self.areas:
                a.account.locked_vm -= a.length


def _iommu_prot(prot: Any) -> int:
    from ..abi.iommufd import IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE

    return (IOMMU_READ if prot & IOMMU_IOAS_MAP_READABLE else 0) | (
        IOMMU_WRITE if prot & IOMMU_IOAS_MAP_WRITEABLE else 0
    )
