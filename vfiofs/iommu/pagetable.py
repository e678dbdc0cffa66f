"""The IOMMU page table: an x86-64-style radix tree of 512-entry tables.

Levels follow the address width (39 bits: 3 levels, 48: 4, 57: 5). A leaf maps 4 KiB,
2 MiB or 1 GiB, the largest that the IOVA, the target address and the remaining size
allow; a partial unmap splits a large leaf. A leaf does not store a per-page address:
it points to the `_Run` its map call created (owner, IOVA, target address, permissions),
and the target of an IOVA is ``run.vaddr + (iova - run.iova)``. So filling 512 entries is
one list slice assignment, and a 1 GiB map of aligned memory is a single entry.

This table is the single source of truth for what a device may reach: DMA translates
through it, page by page.

Dirty tracking (IOMMU_HWPT_SET_DIRTY_TRACKING) is off until `set_dirty_tracking`; then
``dirty`` maps the IOVA of each leaf a device wrote to the leaf's size, as hardware sets
the dirty bit of the IOPTE it wrote through (a write into a 2 MiB leaf dirties the whole
leaf). With tracking off, ``dirty`` is None and DMA pays nothing for it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, Protocol

from ..errors import KernelError
from ..uaccess import MemorySource

IOMMU_READ = 1
IOMMU_WRITE = 2
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
ENTRIES = 512
LEAF_LEVELS = (1, 2, 3)  # 4 KiB, 2 MiB, 1 GiB


def level_shift(level: int) -> int:
    """The bits an entry of ``level`` (1 = 4 KiB leaves) covers."""
    return PAGE_SHIFT + 9 * (level - 1)


class Translation(NamedTuple):
    """Where one IOVA goes."""

    owner: MemorySource
    vaddr: int
    prot: int
    page_size: int


class Mapping(NamedTuple):
    """A run of IOVA space mapped contiguously to one owner."""

    iova: int
    size: int
    owner: MemorySource
    vaddr: int
    prot: int


def merge_mappings(pieces: Iterable[Mapping]) -> Iterator[Mapping]:
    """Join pieces (in IOVA order) that continue each other: the next IOVA, the same
    owner, the next address, the same permissions. What a table's ``walk`` reports."""
    cur: Mapping | None = None
    for m in pieces:
        if (
            cur is not None
            and cur.iova + cur.size == m.iova
            and cur.owner is m.owner
            and cur.vaddr + cur.size == m.vaddr
            and cur.prot == m.prot
        ):
            cur = cur._replace(size=cur.size + m.size)
            continue
        if cur is not None:
            yield cur
        cur = m
    if cur is not None:
        yield cur


class PageTable(Protocol):
    """What a domain asks of its page table: `IoPageTable` here, the mock IOMMU's 2 KiB
    table (mock_pagetable.py), anything a driver brings."""

    mapped_bytes: int

    def map(
        self, iova: int, size: int, owner: MemorySource, vaddr: int, prot: int
    ) -> None: ...
    def unmap(self, iova: int, size: int) -> int: ...
    def translate(self, iova: int) -> Translation | None: ...
    def walk(self) -> Iterator[Mapping]: ...
    def set_dirty_tracking(self, enable: bool) -> None: ...
    def record_dirty(self, iova: int, size: int) -> None: ...
    def read_and_clear_dirty(
        self, iova: int, size: int, *, clear: bool = True
    ) -> list[tuple[int, int]]: ...


class _Run:
    """What one map call put in the table."""

    __slots__ = ("iova", "owner", "prot", "vaddr")

    def __init__(self, owner: MemorySource, iova: int, vaddr: int, prot: int) -> None:
        self.owner, self.iova, self.vaddr, self.prot = owner, iova, vaddr, prot


_Table = list[Any]
_new = tuple.__new__  # entries: None, a _Run (leaf) or a nested _Table


class IoPageTable:
    """A radix IOMMU page table.

    Args:
        address_width: 39, 48 or 57; IOVAs must be below ``1 << address_width``.
    """

    def __init__(self, address_width: int = 48) -> None:
        if address_width not in (39, 48, 57):
            raise ValueError(f"address width {address_width}")
        self.address_width = address_width
        self.levels = (address_width - PAGE_SHIFT) // 9
        self.root: _Table = [None] * ENTRIES
        self.mapped_bytes = 0
        self.dirty: dict[int, int] | None = (
            None  # leaf iova -> leaf size, when tracking
        )

    # --- checks ------------------------------------------------------------------------

    def _check(self, iova: int, size: int) -> None:
        if size <= 0 or (iova | size) & (PAGE_SIZE - 1):
            raise KernelError(
                errno.EINVAL, f"unaligned or empty range {iova:#x}+{size:#x}"
            )
        if iova < 0 or iova + size > 1 << self.address_width:
            raise KernelError(
                errno.EINVAL, f"range {iova:#x}+{size:#x} outside the aperture"
            )

    # --- map ---------------------------------------------------------------------------

    def map(
        self, iova: int, size: int, owner: MemorySource, vaddr: int, prot: int
    ) -> None:
        """Map ``[iova, iova+size)`` to ``owner``'s ``vaddr``. Raises EINVAL for bad
        alignment or range, EEXIST if any page of the range is mapped (nothing changes)."""
        self._check(iova, size)
        if vaddr & (PAGE_SIZE - 1) or vaddr < 0:
            raise KernelError(errno.EINVAL, f"unaligned target {vaddr:#x}")
        if self._any(self.root, self.levels, 0, iova, iova + size):
            raise KernelError(errno.EEXIST, f"{iova:#x}+{size:#x} overlaps a mapping")
        run = _Run(owner, iova, vaddr, prot)
        self._fill(self.root, self.levels, 0, iova, iova + size, run)
        self.mapped_bytes += size

    def _any(self, table: _Table, level: int, base: int, lo: int, hi: int) -> bool:
        shift = level_shift(level)
        first = max(lo, base) - base >> shift
        last = min(hi, base + (ENTRIES << shift)) - base - 1 >> shift
        for i in range(first, last + 1):
            e = table[i]
            if e is None:
                continue
            if e.__class__ is _Run:
                return True
            if self._any(e, level - 1, base + (i << shift), lo, hi):
                return True
        return False

    def _fill(
        self, table: _Table, level: int, base: int, lo: int, hi: int, run: _Run
    ) -> None:
        shift = level_shift(level)
        size = 1 << shift
        i = max(lo, base) - base >> shift
        last = min(hi, base + (ENTRIES << shift)) - base - 1 >> shift
        delta = run.vaddr - run.iova
        while i <= last:
            start = base + (i << shift)
            if (
                level in LEAF_LEVELS
                and start >= lo
                and (start + delta) & (size - 1) == 0
            ):
                # a run of whole, aligned entries: one slice assignment
                j = min(last + 1, (hi - base) >> shift)
                if j > i:
                    table[i:j] = [run] * (j - i)
                    i = j
                    continue
            sub = table[i]
            if sub is None:
                sub = table[i] = [None] * ENTRIES
            self._fill(sub, level - 1, start, lo, hi, run)
            i += 1

    # --- unmap -------------------------------------------------------------------------

    def unmap(self, iova: int, size: int) -> int:
        """Unmap whatever is mapped in ``[iova, iova+size)``, splitting large leaves that
        straddle the edges. Returns the bytes that were mapped. Raises EINVAL."""
        self._check(iova, size)
        freed = self._clear(self.root, self.levels, 0, iova, iova + size)
        self.mapped_bytes -= freed
        if self.dirty:
            # the IOPTEs are gone, and their dirty bits with them
            end = iova + size
            for leaf in [
                a for a, n in self.dirty.items() if a >= iova and a + n <= end
            ]:
                del self.dirty[leaf]
        return freed

    # --- dirty tracking ----------------------------------------------------------------

    def set_dirty_tracking(self, enable: bool) -> None:
        """Start (with every dirty bit clear) or stop recording DMA writes."""
        self.dirty = {} if enable else None

    def record_dirty(self, iova: int, size: int) -> None:
        """A device wrote ``[iova, iova+size)``: set the dirty bit of every leaf it
        went through (no-op while tracking is off or where nothing is mapped)."""
        dirty = self.dirty
        if dirty is None:
            return
        pos, end = iova, iova + size
        while pos < end:
            t = self.translate(pos)
            step = t.page_size if t is not None else PAGE_SIZE
            leaf = pos & ~(step - 1)
            if t is not None:
                dirty[leaf] = step
            pos = leaf + step

    def read_and_clear_dirty(
        self, iova: int, size: int, *, clear: bool = True
    ) -> list[tuple[int, int]]:
        """The dirty leaves ``(iova, size)`` that meet ``[iova, iova+size)``, sorted;
        their bits are cleared unless ``clear`` is False (NO_CLEAR)."""
        if not self.dirty:
            return []
        end = iova + size
        out = sorted((a, n) for a, n in self.dirty.items() if a < end and a + n > iova)
        if clear:
            for a, _ in out:
                del self.dirty[a]
        return out

    def _clear(self, table: _Table, level: int, base: int, lo: int, hi: int) -> int:
        shift = level_shift(level)
        size = 1 << shift
        first = max(lo, base) - base >> shift
        last = min(hi, base + (ENTRIES << shift)) - base - 1 >> shift
        freed = 0
        for i in range(first, last + 1):
            e = table[i]
            if e is None:
                continue
            start = base + (i << shift)
            if e.__class__ is _Run:
                if start >= lo and start + size <= hi:
                    table[i] = None
                    freed += size
                    continue
                # split the large leaf into the next level's leaves, then clear part
                e = table[i] = [e] * ENTRIES
            freed += self._clear(e, level - 1, start, lo, hi)
            if not any(e):
                table[i] = None
        return freed

    # --- lookups -----------------------------------------------------------------------

    def translate(self, iova: int) -> Translation | None:
        """Where ``iova`` goes, or None if it is not mapped."""
        if iova < 0 or iova >> self.address_width:
            return None
        e: Any = self.root
        shift = level_shift(self.levels)
        while True:
            e = e[(iova >> shift) & 511]
            if e is None:
                return None
            if e.__class__ is _Run:
                return _new(
                    Translation, (e.owner, e.vaddr + iova - e.iova, e.prot, 1 << shift)
                )
            shift -= 9

    def walk(self) -> Iterator[Mapping]:
        """Every mapping in ascending IOVA order, contiguous leaves merged."""
        return merge_mappings(
            Mapping(iova, size, run.owner, run.vaddr + (iova - run.iova), run.prot)
            for iova, size, run in self._spans(self.root, self.levels, 0)
        )

    def _spans(
        self, table: _Table, level: int, base: int
    ) -> Iterator[tuple[int, int, _Run]]:
        """The leaves in IOVA order, neighbouring entries of one run joined: a 1 GiB
        map of 4 KiB leaves is 512 spans, not 262,144 leaves."""
        shift = level_shift(level)
        run: _Run | None = None
        first = last = 0
        for i, e in enumerate(table):
            if e.__class__ is _Run:
                if e is run and i == last + 1:
                    last = i
                    continue
                if run is not None:
                    yield base + (first << shift), (last - first + 1) << shift, run
                run, first, last = e, i, i
                continue
            if run is not None:
                yield base + (first << shift), (last - first + 1) << shift, run
                run = None
            if e is not None:
                yield from self._spans(e, level - 1, base + (i << shift))
        if run is not None:
            yield base + (first << shift), (last - first + 1) << shift, run

    def _leaves(
        self, table: _Table, level: int, base: int
    ) -> Iterator[tuple[int, int, _Run]]:
        shift = level_shift(level)
        for i, e in enumerate(table):
            if e is None:
                continue
            if e.__class__ is _Run:
                yield base + (i << shift), 1 << shift, e
            else:
                yield from self._leaves(e, level - 1, base + (i << shift))

    def leaf_sizes(self) -> dict[int, int]:
        """How many leaves of each size the table holds (for tests and dumps)."""
        out: dict[int, int] = {}
        for _, size, _ in self._leaves(self.root, self.levels, 0):
            out[size] = out.get(size, 0) + 1
        return out

    def dump(self) -> str:
        """The mappings, one per line."""
        return "\n".join(
            f"{m.iova:#014x}-{m.iova + m.size - 1:#014x} -> {m.vaddr:#x} prot={m.prot} owner={m.owner!r}"
            for m in self.walk()
        )
