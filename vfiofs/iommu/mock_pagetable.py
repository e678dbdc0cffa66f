"""The mock IOMMU's page table: one entry per 2 KiB IO page, as the kernel's selftest
mock domain keeps one xarray entry per ``MOCK_IO_PAGE_SIZE`` (half a CPU page) in
drivers/iommu/iommufd/selftest.c.

Same interface as `IoPageTable` (map, unmap, translate, walk, dirty tracking), so a
device attached to a mock domain DMAs through it. A "huge" table (MOCK_IOMMUPT_HUGE)
also maps 1 MiB leaves where the IOVA, the target and the length allow; a huge leaf is
stored as its 512 small entries sharing one run, and reports its size in translate.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

from ..errors import KernelError
from ..uaccess import MemorySource
from .pagetable import Mapping, Translation, merge_mappings

MOCK_IO_PAGE_SIZE = 2048
MOCK_HUGE_PAGE_SIZE = 512 * MOCK_IO_PAGE_SIZE


class _Pte:
    __slots__ = ("iova", "owner", "prot", "size", "vaddr")

    def __init__(
        self, owner: MemorySource, iova: int, vaddr: int, prot: int, size: int
    ) -> None:
        self.owner, self.iova, self.vaddr, self.prot, self.size = (
            owner,
            iova,
            vaddr,
            prot,
            size,
        )


class MockPageTable:
    """IO page number -> `_Pte` (the leaf that maps it)."""

    def __init__(self, aperture: tuple[int, int], *, huge: bool = False) -> None:
        self.aperture = aperture
        self.huge = huge
        self.ptes: dict[int, _Pte] = {}
        self.mapped_bytes = 0
        self.dirty: dict[int, int] | None = None

    def _check(self, iova: int, size: int) -> None:
        if size <= 0 or (iova | size) % MOCK_IO_PAGE_SIZE:
            raise KernelError(errno.EINVAL, f"unaligned or empty {iova:#x}+{size:#x}")
        lo, hi = self.aperture
        if iova < lo or iova + size - 1 > hi:
            raise KernelError(errno.EINVAL, f"{iova:#x}+{size:#x} outside the aperture")

    def map(
        self, iova: int, size: int, owner: MemorySource, vaddr: int, prot: int
    ) -> None:
        """Map ``[iova, iova+size)``. EINVAL (alignment, aperture), EEXIST (overlap)."""
        self._check(iova, size)
        if vaddr % MOCK_IO_PAGE_SIZE:
            raise KernelError(errno.EINVAL, f"unaligned target {vaddr:#x}")
        first, n = iova // MOCK_IO_PAGE_SIZE, size // MOCK_IO_PAGE_SIZE
        if any(first + i in self.ptes for i in range(n)):
            raise KernelError(errno.EEXIST, f"{iova:#x}+{size:#x} overlaps a mapping")
        pos = 0
        while pos < size:
            cur = iova + pos
            big = MOCK_HUGE_PAGE_SIZE
            if (
                self.huge
                and cur % big == 0
                and (vaddr + pos) % big == 0
                and size - pos >= big
            ):
                step = big
            else:
                step = MOCK_IO_PAGE_SIZE
            pte = _Pte(owner, cur, vaddr + pos, prot, step)
            for i in range(step // MOCK_IO_PAGE_SIZE):
                self.ptes[cur // MOCK_IO_PAGE_SIZE + i] = pte
            pos += step
        self.mapped_bytes += size

    def unmap(self, iova: int, size: int) -> int:
        """Unmap what is mapped in the range; the bytes that were mapped."""
        self._check(iova, size)
        freed = 0
        for i in range(iova // MOCK_IO_PAGE_SIZE, (iova + size) // MOCK_IO_PAGE_SIZE):
            if self.ptes.pop(i, None) is not None:
                freed += MOCK_IO_PAGE_SIZE
                if self.dirty:
                    self.dirty.pop(i * MOCK_IO_PAGE_SIZE, None)
        self.mapped_bytes -= freed
        return freed

    def translate(self, iova: int) -> Translation | None:
        pte = self.ptes.get(iova // MOCK_IO_PAGE_SIZE)
        if pte is None:
            return None
        return Translation(pte.owner, pte.vaddr + iova - pte.iova, pte.prot, pte.size)

    def walk(self) -> Iterator[Mapping]:
        """Every mapping in IOVA order, contiguous entries merged."""
        return merge_mappings(
            Mapping(
                page * MOCK_IO_PAGE_SIZE,
                MOCK_IO_PAGE_SIZE,
                pte.owner,
                pte.vaddr + page * MOCK_IO_PAGE_SIZE - pte.iova,
                pte.prot,
            )
            for page, pte in sorted(self.ptes.items())
        )

    # --- dirty tracking (mock_domain_read_and_clear_dirty) ---------------------------

    def set_dirty_tracking(self, enable: bool) -> None:
        self.dirty = {} if enable else None

    def set_dirty_page(self, iova: int) -> bool:
        """IOMMU_TEST_OP_DIRTY: mark the IO page at ``iova`` dirty if it is mapped."""
        if iova // MOCK_IO_PAGE_SIZE not in self.ptes or self.dirty is None:
            return False
        self.dirty[iova - iova % MOCK_IO_PAGE_SIZE] = MOCK_IO_PAGE_SIZE
        return True

    def record_dirty(self, iova: int, size: int) -> None:
        dirty = self.dirty
        if dirty is None:
            return
        first = iova - iova % MOCK_IO_PAGE_SIZE
        for a in range(first, iova + size, MOCK_IO_PAGE_SIZE):
            if a // MOCK_IO_PAGE_SIZE in self.ptes:
                dirty[a] = MOCK_IO_PAGE_SIZE

    def read_and_clear_dirty(
        self, iova: int, size: int, *, clear: bool = True
    ) -> list[tuple[int, int]]:
        """Dirty leaves in the range: a dirty IO page of a huge leaf reports (and
        clears) the whole leaf, as the mock walks by the leaf's page size."""
        if not self.dirty:
            return []
        out: dict[int, int] = {}
        end = iova + size
        for a in sorted(
            a for a in self.dirty if a < end and a + MOCK_IO_PAGE_SIZE > iova
        ):
            pte = self.ptes.get(a // MOCK_IO_PAGE_SIZE)
            leaf = pte.iova if pte is not None else a
            n = pte.size if pte is not None else MOCK_IO_PAGE_SIZE
            out[leaf] = n
        if clear:
            for leaf, n in out.items():
                for a in range(leaf, leaf + n, MOCK_IO_PAGE_SIZE):
                    self.dirty.pop(a, None)
        return sorted(out.items())
