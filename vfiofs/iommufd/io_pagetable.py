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
import itertools
from collections.abc import Sequence

import attrs

from ..abi.iommufd import IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE
from ..errors import KernelError, for_each_or_unwind
from ..iommu.domain import IommuDomain
from ..iommu.iova import iova_holes, iova_overlaps, iova_reserved_hit
from ..iommu.pagetable import IOMMU_READ, IOMMU_WRITE
from ..uaccess import CAP_IPC_LOCK, AddressSpace, Caller, account_locked_vm

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
        if not self.domains:
            for_each_or_unwind(self.areas, self._pin, self._unpin)
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


@attrs.frozen
class IoptPages:
    """Memory to map (``struct iopt_pages``, as one area sees it): ``length`` bytes at
    ``uptr`` of ``mm``. ``account`` is False for a mapper with CAP_IPC_LOCK
    (``IOPT_PAGES_ACCOUNT_NONE``): pinning them charges nothing."""

    mm: AddressSpace
    uptr: int
    length: int
    account: bool


def iopt_alloc_pages(caller: Caller, uptr: int, length: int) -> IoptPages:
    """``iopt_alloc_pages``: EINVAL for an empty or huge length, EOVERFLOW when the
    user range wraps. The account mode is decided here, by the mapper's capability."""
    if length == 0 or length > U64_MAX - PAGE:
        raise KernelError(errno.EINVAL, f"length {length:#x}")
    if uptr + length > U64_MAX:
        raise KernelError(errno.EOVERFLOW, "user range wraps")
    return IoptPages(caller.mm, uptr, length, account=not caller.capable(CAP_IPC_LOCK))


def iopt_check_iova(iopt: IoPagetable, iova: int, length: int) -> None:
    """``iopt_check_iova``: a fixed IOVA must be aligned (EINVAL), must not wrap
    (EOVERFLOW), must miss every reserved range (EINVAL) and every area (EEXIST)."""
    if iova % iopt.iova_alignment:
        raise KernelError(errno.EINVAL, f"iova not aligned to {iopt.iova_alignment:#x}")
    last = iova + length - 1
    if last > U64_MAX:
        raise KernelError(errno.EOVERFLOW, f"{iova:#x}+{length:#x} wraps")
    if iopt.hits_reserved(iova, last):
        raise KernelError(errno.EINVAL, "overlaps a reserved range")
    if iopt.overlapping(iova, last):
        raise KernelError(errno.EEXIST, "overlaps a mapping")


def iopt_alloc_area(
    iopt: IoPagetable, iova: int | None, pages: Sequence[IoptPages]
) -> int:
    """Place ``pages`` back to back at ``iova``, or where ``iopt_alloc_iova`` finds room
    (``iova`` None): the checks of ``iopt_alloc_area_pages`` and ``iopt_insert_area``,
    before anything is pinned. Returns the IOVA."""
    length = sum(p.length for p in pages)
    if not length or length % iopt.iova_alignment:
        raise KernelError(errno.EINVAL, f"length {length:#x}")
    if iova is None:
        iova = iopt.alloc_iova(length, pages[0].uptr)
    else:
        iopt_check_iova(iopt, iova, length)
    at = iova
    for p in pages:
        if p.uptr % PAGE != at % PAGE:
            raise KernelError(errno.EINVAL, "user_va and iova page offsets differ")
        at += p.length
    return iova


def iopt_fill_domains(
    iopt: IoPagetable, iova: int, pages: Sequence[IoptPages], prot: int
) -> None:
    """Add the areas and load them into every domain, pinning (ENOMEM past
    RLIMIT_MEMLOCK). On failure nothing stays mapped or charged."""
    areas: list[Area] = []

    def fill(piece: tuple[int, IoptPages]) -> None:
        at, p = piece
        areas.append(iopt.map(at, p.length, p.mm, p.uptr, prot, account=p.account))

    def unfill(piece: tuple[int, IoptPages]) -> None:
        iopt.remove(areas.pop())

    offsets = itertools.accumulate((p.length for p in pages), initial=iova)
    for_each_or_unwind(zip(offsets, pages, strict=False), fill, unfill)


def iopt_map_user_pages(
    iopt: IoPagetable,
    caller: Caller,
    iova: int | None,
    uptr: int,
    length: int,
    prot: int,
) -> int:
    """``iopt_map_user_pages``: map the caller's ``[uptr, uptr+length)`` at ``iova`` (or
    at an IOVA the table picks), in the kernel's order of checks. IOAS_MAP and the VFIO
    compat MAP_DMA both come here. Returns the IOVA.

    Raises:
        KernelError: EINVAL, EOVERFLOW, EEXIST, ENOSPC, EFAULT (memory not mapped), ENOMEM.
    """
    pages = iopt_alloc_pages(caller, uptr, length)
    iova = iopt_alloc_area(iopt, iova, [pages])
    # pinning faults in pages that are not there (or not writable)
    caller.mm.check_range(
        uptr & ~(PAGE - 1), length, write=bool(prot & IOMMU_IOAS_MAP_WRITEABLE)
    )
    iopt_fill_domains(iopt, iova, [pages], prot)
    return iova


def iopt_unmap_iova(iopt: IoPagetable, iova: int, length: int) -> tuple[int, int]:
    """``iopt_unmap_iova``: remove every area inside ``[iova, iova+length)``.

    Returns ``(bytes unmapped, errno)``, as the kernel returns ``rc`` and fills
    ``*unmapped``: EINVAL for length 0, EOVERFLOW when the range wraps, ENOENT when an
    area sticks out of the range (areas are never split; those removed before it stay
    removed) or when nothing was mapped there.
    """
    if not length:
        return 0, errno.EINVAL
    last = iova + length - 1
    if last > U64_MAX:
        return 0, errno.EOVERFLOW
    return _unmap_range(iopt, iova, last)


def iopt_unmap_all(iopt: IoPagetable) -> int:
    """``iopt_unmap_all``: remove every area; the bytes unmapped (an empty IOAS is 0)."""
    return _unmap_range(iopt, 0, U64_MAX)[0]


def _unmap_range(iopt: IoPagetable, start: int, last: int) -> tuple[int, int]:
    unmapped = 0
    for area in iopt.overlapping(start, last):
        if area.iova < start or area.last > last:
            return unmapped, errno.ENOENT
        unmapped += area.length
        iopt.remove(area)
    return unmapped, 0 if unmapped else errno.ENOENT


def _iommu_prot(prot: int) -> int:
    return (IOMMU_READ if prot & IOMMU_IOAS_MAP_READABLE else 0) | (
        IOMMU_WRITE if prot & IOMMU_IOAS_MAP_WRITEABLE else 0
    )
