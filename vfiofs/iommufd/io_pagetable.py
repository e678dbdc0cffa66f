"""Mirror of drivers/iommu/iommufd/io_pagetable.c (with the accounting of pages.c): an
IOAS's areas, reserved and allowed ranges, the domains that mirror it and the accesses
attached to it.

Each IOAS_MAP / IOAS_MAP_FILE / IOAS_COPY makes areas (one per piece of memory); areas
are never split (an unmap must cover whole areas). Every area is mapped into the page
table of every attached domain, so device DMA translates through it; attaching a domain
replays the areas (pinning, which charges RLIMIT_MEMLOCK).

The IOVA alignment is the kernel's ``iopt->iova_alignment``: 1 for a table with no
domain, else the largest smallest-page of its domains (4 KiB on the host IOMMU, 2 KiB on
the mock), PAGE_SIZE once huge pages are off or an access that pins pages is attached.
IOVAs, lengths and the memory's offset in its page must all be multiples of it.

This module is below the private header: the native IOAS ioctls, the VFIO compat layer
and iommufd_access all come here, and it imports nothing else of iommufd.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import logging
from collections.abc import Sequence
from typing import Protocol

import attrs

from ..abi.iommufd import IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE
from ..errors import KernelError, for_each_or_unwind
from ..iommu.domain import IommuDomain
from ..iommu.iova import iova_holes, iova_overlaps, iova_reserved_hit
from ..iommu.pagetable import IOMMU_READ, IOMMU_WRITE
from ..uaccess import (
    CAP_IPC_LOCK,
    PAGE_SIZE,
    AddressSpace,
    Caller,
    FileMemory,
    MemorySource,
    account_locked_vm,
)

log = logging.getLogger("vfiofs.iommufd")

U64_MAX = (1 << 64) - 1


class IoptAccess(Protocol):
    """An ``iommufd_access`` attached to the table (``iopt->access_list``)."""

    @property
    def iova_alignment(self) -> int:
        """PAGE_SIZE for an access that pins pages, else 1."""
        ...

    def notify_unmap(self, iova: int, length: int) -> None:
        """``ops->unmap``: the range is going; unpin what you hold in it."""
        ...


@attrs.define(eq=False)
class Area:
    """``struct iopt_area`` with its ``iopt_pages``: one piece of one map call.

    Attributes:
        mm: where the bytes are: the mapping process's memory, or a file
            (IOAS_MAP_FILE: ``file`` is set and ``user_va`` is an offset in it).
        acct: whose RLIMIT_MEMLOCK pinning charges: the mapping process, or nobody
            (``IOPT_PAGES_ACCOUNT_NONE``: the mapper had CAP_IPC_LOCK).
        num_accesses: pins by accesses that can be asked to let go (``ops->unmap``).
        num_locks: pins by the core's own accesses (HW queues): IOAS_UNMAP is EBUSY.
    """

    iova: int
    length: int
    mm: MemorySource
    user_va: int
    prot: int
    acct: AddressSpace | None
    file: FileMemory | None = None
    num_accesses: int = 0
    num_locks: int = 0

    @property
    def last(self) -> int:
        return self.iova + self.length - 1

    @property
    def page_offset(self) -> int:
        """``area->page_offset``: where the memory starts in its CPU page."""
        return self.user_va % PAGE_SIZE


@attrs.define(eq=False)
class IoPagetable:
    """``struct io_pagetable``."""

    areas: list[Area] = attrs.Factory(list)  # sorted by iova
    # owner -> ranges (the reserved interval tree): a device's reserved regions, the
    # outside of a domain's aperture, IOMMU_TEST_OP_ADD_RESERVED
    reserved: dict[object, list[tuple[int, int]]] = attrs.Factory(dict)
    allowed: list[tuple[int, int]] | None = None
    domains: list[IommuDomain] = attrs.Factory(list)
    huge_pages: bool = True  # !disable_large_pages
    accesses: list[IoptAccess] = attrs.Factory(list)

    @property
    def iova_alignment(self) -> int:
        return _iova_alignment(self.domains, self.accesses, huge=self.huge_pages)

    def check_iova_alignment(self, new_alignment: int) -> None:
        """``iopt_check_iova_alignment``: every area must suit a larger alignment
        (its IOVA, length and page offset), else EADDRINUSE."""
        for a in self.areas:
            if (a.iova | a.length | a.page_offset) % new_alignment:
                raise KernelError(
                    errno.EADDRINUSE,
                    f"area {a.iova:#x}+{a.length:#x} (page offset {a.page_offset:#x}) "
                    f"does not suit alignment {new_alignment:#x}",
                )

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

    def hits_allowed(self, iova: int, last: int) -> bool:
        return iova_reserved_hit(self.allowed or (), iova, last)

    def check_reserve(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Whether `reserve` would take ``ranges``: EADDRINUSE when one meets an area
        or an allowed range."""
        for lo, hi in ranges:
            if self.overlapping(lo, hi) or self.hits_allowed(lo, hi):
                raise KernelError(
                    errno.EADDRINUSE, f"reserved {lo:#x}-{hi:#x} is mapped or allowed"
                )

    def reserve(self, owner: object, ranges: Sequence[tuple[int, int]]) -> None:
        """``iopt_reserve_iova`` for each range, all or none: EADDRINUSE when a range
        meets an area or an allowed range."""
        self.check_reserve(ranges)
        if ranges:
            self.reserved.setdefault(owner, []).extend(ranges)

    def unreserve(self, owner: object) -> None:
        """``iopt_remove_reserved_iova``."""
        self.reserved.pop(owner, None)

    def alloc_iova(self, length: int, uptr: int) -> int:
        """``iopt_alloc_iova``: an IOVA for ``length`` bytes that is never 0, keeps the
        alignment present in ``uptr`` (up to the length's power of two) and its page
        offset, and lies in an allowed range, off every reserved range and area.

        Raises:
            KernelError: EOVERFLOW (length), EINVAL (``uptr`` less aligned than the
                table), ENOSPC (no room).
        """
        if length == 0 or length >= U64_MAX // 2:
            raise KernelError(errno.EOVERFLOW, f"length {length:#x}")
        page_offset = uptr % PAGE_SIZE
        size_align = 1 << (length - 1).bit_length()
        align = size_align if not uptr else min(size_align, uptr & -uptr)
        if align < self.iova_alignment:
            raise KernelError(
                errno.EINVAL,
                f"user address {uptr:#x} is less aligned than {self.iova_alignment:#x}",
            )
        spans = (
            self.allowed
            if self.allowed is not None
            else [(PAGE_SIZE, U64_MAX - PAGE_SIZE)]
        )
        used = [(a.iova, a.last) for a in self.areas] + self.reserved_ranges()
        for lo, hi in spans:
            lo, hi = max(lo, PAGE_SIZE), min(hi, U64_MAX - PAGE_SIZE)
            for hole_lo, hole_hi in iova_holes(lo, hi, used):
                start = -(-hole_lo // align) * align | page_offset
                if start <= hole_hi and hole_hi - start >= length - 1:
                    return start
        raise KernelError(errno.ENOSPC, "no free IOVA range fits")

    def map(self, pages: IoptPages, iova: int, prot: int) -> Area:
        """Add an area (the caller checked alignment and overlap) and map it into every
        domain, pinning (ENOMEM past RLIMIT_MEMLOCK, before anything changes)."""
        area = Area(
            iova, pages.length, pages.src, pages.start, prot, pages.acct, pages.file
        )
        if self.domains:
            self._pin(area)
        for d in self.domains:
            d.map(iova, area.length, area.mm, area.user_va, _iommu_prot(prot))
        bisect.insort(self.areas, area, key=lambda a: a.iova)
        if area.file is not None:
            area.file.areas += 1
        return area

    @staticmethod
    def _pin(area: Area) -> None:
        """Pinning an area's pages charges them (ENOMEM past RLIMIT_MEMLOCK)."""
        if area.acct is not None:
            account_locked_vm(area.acct, area.length)

    @staticmethod
    def _unpin(area: Area) -> None:
        if area.acct is not None:
            account_locked_vm(area.acct, area.length, inc=False)

    def remove(self, area: Area) -> None:
        for d in self.domains:
            d.unmap(area.iova, area.length)
        if self.domains:
            self._unpin(area)
        self.areas.remove(area)
        if area.file is not None:
            area.file.areas -= 1
            if not area.file.areas:  # the file's last area: let go of it
                area.file.close()

    def add_domain(self, domain: IommuDomain) -> None:
        """``iopt_table_add_domain``: the domain's page size may raise the alignment
        (EINVAL past PAGE_SIZE; EADDRINUSE for an area that does not suit it), the
        outside of its aperture becomes reserved (EADDRINUSE for an area or allowed
        range there), then every area is loaded (pinning on the first domain). On
        failure nothing changes."""
        new = max(domain.min_page_size, self.iova_alignment)
        if new > PAGE_SIZE:
            raise KernelError(errno.EINVAL, f"IO page size {new:#x} above PAGE_SIZE")
        self.check_iova_alignment(new)
        lo, hi = domain.aperture_start, domain.aperture_end
        outside = [(0, lo - 1)] if lo else []
        if hi < U64_MAX:
            outside.append((hi + 1, U64_MAX))
        self.reserve(domain, outside)
        try:
            if not self.domains:
                for_each_or_unwind(self.areas, self._pin, self._unpin)
        except KernelError:
            self.unreserve(domain)
            raise
        for a in self.areas:
            domain.map(a.iova, a.length, a.mm, a.user_va, _iommu_prot(a.prot))
        self.domains.append(domain)

    def remove_domain(self, domain: IommuDomain) -> None:
        """``iopt_table_remove_domain``."""
        for a in self.areas:
            domain.unmap(a.iova, a.length)
        self.domains.remove(domain)
        self.unreserve(domain)
        if not self.domains:
            for a in self.areas:
                self._unpin(a)

    def add_access(self, access: IoptAccess) -> None:
        """``iopt_add_access``: EADDRINUSE when an area does not suit the alignment the
        access needs."""
        self.check_iova_alignment(
            _iova_alignment(
                self.domains, [*self.accesses, access], huge=self.huge_pages
            )
        )
        self.accesses.append(access)

    def remove_access(self, access: IoptAccess) -> None:
        self.accesses.remove(access)


def _iova_alignment(
    domains: Sequence[IommuDomain], accesses: Sequence[IoptAccess], *, huge: bool
) -> int:
    """``iopt_calculate_iova_alignment``: PAGE_SIZE without huge pages, else 1; raised
    to each domain's smallest IO page and each access's alignment."""
    return max(
        [1 if huge else PAGE_SIZE]
        + [d.min_page_size for d in domains]
        + [a.iova_alignment for a in accesses]
    )


@attrs.frozen
class IoptPages:
    """Memory to map (``struct iopt_pages``, as one area sees it): ``length`` bytes at
    ``start`` of ``src`` (a user address, or an offset in ``file``). Pinning them charges
    ``acct``, or nobody (None) for a mapper with CAP_IPC_LOCK."""

    src: MemorySource
    start: int
    length: int
    acct: AddressSpace | None
    file: FileMemory | None = None


def _account(caller: Caller) -> AddressSpace | None:
    """``__iopt_alloc_pages``: a mapper with CAP_IPC_LOCK pins uncharged
    (``IOPT_PAGES_ACCOUNT_NONE``); anyone else pays in its own RLIMIT_MEMLOCK."""
    return None if caller.capable(CAP_IPC_LOCK) else caller.mm


def iopt_alloc_pages(caller: Caller, uptr: int, length: int) -> IoptPages:
    """``iopt_alloc_user_pages``: EINVAL for an empty or huge length, EOVERFLOW when the
    user range wraps. The account mode is decided here, by the mapper's capability."""
    if length == 0 or length > U64_MAX - PAGE_SIZE:
        raise KernelError(errno.EINVAL, f"length {length:#x}")
    if uptr + length > U64_MAX:
        raise KernelError(errno.EOVERFLOW, "user range wraps")
    return IoptPages(caller.mm, uptr, length, _account(caller))


def iopt_alloc_file_pages(
    caller: Caller,
    file: FileMemory,
    start: int,
    length: int,
    *,
    dmabuf: bool = False,
) -> IoptPages:
    """``iopt_alloc_file_pages`` (``iopt_alloc_dmabuf_pages`` for a dma-buf): ``length``
    bytes of ``file`` from ``start``. EINVAL for an empty length, EOVERFLOW when the
    range wraps; ``memfd_pin_folios`` pins only shmem and hugetlbfs folios (EINVAL
    otherwise) and nothing past the end (EINVAL). A dma-buf's pages are never charged
    (the exporter's, not pinned user memory)."""
    if length == 0 or length > U64_MAX - PAGE_SIZE:
        raise KernelError(errno.EINVAL, f"length {length:#x}")
    if start + length > U64_MAX:
        raise KernelError(errno.EOVERFLOW, "start + length wraps")
    if not file.shmem:
        raise KernelError(errno.EINVAL, "not a memfd, tmpfs or hugetlbfs file")
    if start + length > file.size:
        raise KernelError(errno.EINVAL, "past the end of the file")
    return IoptPages(file, start, length, None if dmabuf else _account(caller), file)


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
    before anything is pinned. Returns the IOVA.

    The IOVA and the length must be multiples of the table's alignment, and so must
    each piece's offset in its CPU page (``area->page_offset``): the IOVA and the memory
    need not share their page offset (on the mock IOMMU, IOVA 0x1000 may map the
    second 2 KiB of a page), but a domain maps whole IO pages of it.
    """
    length = sum(p.length for p in pages)
    align = iopt.iova_alignment
    if not length or length % align:
        raise KernelError(errno.EINVAL, f"length {length:#x} (alignment {align:#x})")
    if iova is None:
        iova = iopt.alloc_iova(length, pages[0].start)
    else:
        iopt_check_iova(iopt, iova, length)
    for p in pages:
        if p.start % PAGE_SIZE % align:
            raise KernelError(
                errno.EINVAL,
                f"memory at page offset {p.start % PAGE_SIZE:#x} (alignment {align:#x})",
            )
    return iova


def iopt_fill_domains(
    iopt: IoPagetable, iova: int, pages: Sequence[IoptPages], prot: int
) -> None:
    """Add the areas and load them into every domain, pinning (ENOMEM past
    RLIMIT_MEMLOCK). On failure nothing stays mapped or charged."""
    areas: list[Area] = []

    def fill(piece: tuple[int, IoptPages]) -> None:
        at, p = piece
        areas.append(iopt.map(p, at, prot))

    def unfill(piece: tuple[int, IoptPages]) -> None:
        iopt.remove(areas.pop())

    offsets = itertools.accumulate((p.length for p in pages), initial=iova)
    for_each_or_unwind(zip(offsets, pages, strict=False), fill, unfill)


def iopt_map_pages(
    iopt: IoPagetable, iova: int | None, pages: Sequence[IoptPages], prot: int
) -> int:
    """``iopt_map_pages``: place the pieces, then pin and load them. Returns the IOVA."""
    iova = iopt_alloc_area(iopt, iova, pages)
    iopt_fill_domains(iopt, iova, pages, prot)
    return iova


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
        uptr & ~(PAGE_SIZE - 1), length, write=bool(prot & IOMMU_IOAS_MAP_WRITEABLE)
    )
    iopt_fill_domains(iopt, iova, [pages], prot)
    return iova


def iopt_map_file_pages(
    iopt: IoPagetable,
    caller: Caller,
    iova: int | None,
    file: FileMemory,
    start: int,
    length: int,
    prot: int,
    *,
    dmabuf: bool = False,
) -> int:
    """``iopt_map_file_pages``: map ``length`` bytes of ``file`` from offset ``start``,
    with the checks and placement of `iopt_map_user_pages`. IOAS_MAP_FILE."""
    pages = iopt_alloc_file_pages(caller, file, start, length, dmabuf=dmabuf)
    return iopt_map_pages(iopt, iova, [pages], prot)


def iopt_get_pages(iopt: IoPagetable, iova: int, length: int) -> list[IoptPages]:
    """``iopt_get_pages``: the memory behind ``[iova, iova+length)``, one piece per
    area it crosses (sharing the area's pages and account mode). EINVAL for length 0,
    EOVERFLOW when the range wraps, ENOENT unless areas cover it without a hole."""
    if not length:
        raise KernelError(errno.EINVAL, "length 0")
    last = iova + length - 1
    if last > U64_MAX:
        raise KernelError(errno.EOVERFLOW, f"{iova:#x}+{length:#x} wraps")
    pieces = []
    for a in iopt_area_contig(iopt, iova, length):
        lo, hi = max(a.iova, iova), min(a.last, last)
        pieces.append(
            IoptPages(a.mm, a.user_va + (lo - a.iova), hi - lo + 1, a.acct, a.file)
        )
    return pieces


def iopt_area_contig(iopt: IoPagetable, iova: int, length: int) -> list[Area]:
    """The areas that cover ``[iova, iova+length)`` without a hole
    (``iopt_for_each_contig_area``); ENOENT otherwise."""
    last = iova + length - 1
    areas = iopt.overlapping(iova, last)
    cur = iova
    for a in areas:
        if a.iova > cur:
            break
        cur = a.last + 1
    if not areas or cur <= last:
        raise KernelError(errno.ENOENT, f"{iova:#x}+{length:#x} is not mapped")
    return areas


def iopt_unmap_iova(iopt: IoPagetable, iova: int, length: int) -> tuple[int, int]:
    """``iopt_unmap_iova``: remove every area inside ``[iova, iova+length)``.

    Returns ``(bytes unmapped, errno)``, as the kernel returns ``rc`` and fills
    ``*unmapped``: EINVAL for length 0, EOVERFLOW when the range wraps, ENOENT when an
    area sticks out of the range (areas are never split; those removed before it stay
    removed) or when nothing was mapped there, EBUSY for an area the core itself holds.
    """
    if not length:
        return 0, errno.EINVAL
    last = iova + length - 1
    if last > U64_MAX:
        return 0, errno.EOVERFLOW
    return _unmap_range(iopt, iova, last)


def iopt_unmap_all(iopt: IoPagetable) -> tuple[int, int]:
    """``iopt_unmap_all``: remove every area; ``(bytes unmapped, errno)``. An empty
    IOAS is no error."""
    unmapped, err = _unmap_range(iopt, 0, U64_MAX)
    return unmapped, 0 if err == errno.ENOENT else err


def _unmap_range(iopt: IoPagetable, start: int, last: int) -> tuple[int, int]:
    """``iopt_unmap_iova_range``: accesses pinning an area are told to let go first."""
    unmapped = 0
    for area in iopt.overlapping(start, last):
        if area.iova < start or area.last > last:
            return unmapped, errno.ENOENT
        if area.num_locks:
            return unmapped, errno.EBUSY
        if area.num_accesses:
            iommufd_access_notify_unmap(iopt, area.iova, area.length)
            if area.num_accesses:  # kernel: WARN_ON, the access driver is broken
                log.error("an access kept %#x+%#x pinned", area.iova, area.length)
                return unmapped, errno.EDEADLK
        unmapped += area.length
        iopt.remove(area)
    return unmapped, 0 if unmapped else errno.ENOENT


def iommufd_access_notify_unmap(iopt: IoPagetable, iova: int, length: int) -> None:
    """``iommufd_access_notify_unmap``: every access on the table hears of the unmap."""
    for access in list(iopt.accesses):
        access.notify_unmap(iova, length)


def iommufd_check_iova_range(
    iopt: IoPagetable, iova: int, length: int, page_size: int
) -> None:
    """``iommufd_check_iova_range`` (GET_DIRTY_BITMAP): EOVERFLOW for a range that
    wraps (length 0 too), EINVAL for one not aligned to the IOAS alignment or to
    ``page_size`` (or ``page_size`` 0; ``iova_bitmap_alloc`` takes its ``__ffs``, so
    a power of two)."""
    last = iova + length - 1
    if length == 0 or last > U64_MAX:
        raise KernelError(errno.EOVERFLOW, "iova + length wraps")
    align = iopt.iova_alignment
    if iova % align or (last + 1) % align:
        raise KernelError(errno.EINVAL, f"range not aligned to {align:#x}")
    if not page_size or page_size & (page_size - 1):
        raise KernelError(errno.EINVAL, f"page_size {page_size:#x}")
    if iova % page_size or (last + 1) % page_size:
        raise KernelError(
            errno.EINVAL, f"range not aligned to page_size {page_size:#x}"
        )


def iopt_disable_large_pages(iopt: IoPagetable) -> None:
    """``iopt_disable_large_pages``: not while domains hold mappings (EINVAL); the
    alignment becomes PAGE_SIZE (EADDRINUSE for an area that does not suit it)."""
    if not iopt.huge_pages:
        return
    if iopt.domains and iopt.areas:
        raise KernelError(errno.EINVAL, "domains already hold mappings")
    iopt.check_iova_alignment(_iova_alignment(iopt.domains, iopt.accesses, huge=False))
    iopt.huge_pages = False


def iopt_enable_large_pages(iopt: IoPagetable) -> None:
    iopt.huge_pages = True


def iopt_set_revoked(iopt: IoPagetable, src: MemorySource, revoked: bool) -> None:
    """A dma-buf's exporter revoked (or restored) its memory: its areas leave (or
    rejoin) every domain, so DMA through them faults meanwhile (``iopt_revoke_notify``)."""
    for a in iopt.areas:
        if a.mm is not src:
            continue
        for d in iopt.domains:
            if revoked:
                d.unmap(a.iova, a.length)
            else:
                d.map(a.iova, a.length, a.mm, a.user_va, _iommu_prot(a.prot))


def _iommu_prot(prot: int) -> int:
    return (IOMMU_READ if prot & IOMMU_IOAS_MAP_READABLE else 0) | (
        IOMMU_WRITE if prot & IOMMU_IOAS_MAP_WRITEABLE else 0
    )
