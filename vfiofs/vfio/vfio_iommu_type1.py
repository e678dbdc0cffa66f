"""Mirror of drivers/vfio/vfio_iommu_type1.c: the type1 / type1v2 IOMMU backend.

One `IommuDomain` per container holds every attached group, so device DMA translates
through its page table. Like the kernel's rb-tree of ``vfio_dma``, the backend keeps one
record per MAP_DMA call (a 1 GiB map is one record, not 262,144); the page table holds the
translation. Every check of MAP_DMA and UNMAP_DMA comes in the kernel's order with its
errno; pages are charged to the mapping process's RLIMIT_MEMLOCK.
"""

from __future__ import annotations

import bisect
import errno

import attrs

from ..abi import vfio as V
from ..abi._cstruct import CStruct
from ..errors import KernelError
from ..ioctl_table import ArgKind, IoctlOp, IoctlTable, Ucmd, vfio_info_cap_chain
from ..iommu.domain import IommuDomain
from ..iommu.iova import iova_holes, iova_overlaps
from ..iommu.pagetable import IOMMU_READ, IOMMU_WRITE
from ..uaccess import CAP_IPC_LOCK, AddressSpace, Caller, account_locked_vm
from .vfio import VfioGroup, VfioOptions

U64_MAX = (1 << 64) - 1
DIRTY_BITMAP_SIZE_MAX = 256 << 20  # bytes (vfio_iommu_type1.c)


@attrs.define(eq=False)
class VfioDma:
    """One MAP_DMA call (``struct vfio_dma``)."""

    iova: int
    size: int
    vaddr: int
    prot: int
    mm: AddressSpace
    lock_cap: bool  # the mapper had CAP_IPC_LOCK: RLIMIT_MEMLOCK does not apply
    vaddr_invalid: bool = False

    @property
    def end(self) -> int:
        return self.iova + self.size

    @property
    def last(self) -> int:
        return self.iova + self.size - 1


@attrs.define(eq=False)
class VfioIommuType1:
    """``struct vfio_iommu``: the type1 backend of one container."""

    options: VfioOptions
    v2: bool = True
    domain: IommuDomain = attrs.field(init=False)
    groups: list[VfioGroup] = attrs.Factory(list)
    dmas: list[VfioDma] = attrs.Factory(list)  # sorted by iova
    dma_avail: int = attrs.field(init=False)
    dirty_tracking: bool = False

    def __attrs_post_init__(self) -> None:
        self.domain = IommuDomain(self.options.address_width)
        self.dma_avail = self.options.dma_entry_limit

    @property
    def pgsize_bitmap(self) -> int:
        return self.domain.pgsize_bitmap

    @property
    def pgsize(self) -> int:
        return self.pgsize_bitmap & -self.pgsize_bitmap

    def check_extension(self, ext: int) -> int:
        if ext in (
            V.VFIO_TYPE1_IOMMU,
            V.VFIO_TYPE1v2_IOMMU,
            V.VFIO_UNMAP_ALL,
            V.VFIO_UPDATE_VADDR,
        ):
            return 1
        if ext == V.VFIO_DMA_CC_IOMMU:
            return int(self.domain.enforce_cache_coherency)
        return 0

    def ioctl_name(self, cmd: int) -> str | None:
        return IOCTLS.name(cmd)

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        return IOCTLS.dispatch(self, caller, cmd, arg)

    # --- IOVA ranges -------------------------------------------------------------------

    def iova_ranges(self) -> list[tuple[int, int]]:
        """Valid IOVA ranges: the aperture minus every group's reserved regions."""
        reserved = [r for g in self.groups for r in g.iommu_group.iova_reserved()]
        return iova_holes(
            self.domain.aperture_start, self.domain.aperture_end, reserved
        )

    def _overlapping(self, iova: int, end: int) -> list[VfioDma]:
        """The mappings that meet ``[iova, end)`` (``vfio_find_dma``)."""
        return iova_overlaps(self.dmas, iova, end - 1)

    # --- groups ------------------------------------------------------------------------

    def attach_group(self, group: VfioGroup) -> None:
        """``vfio_iommu_type1_attach_group``."""
        if any(d.vaddr_invalid for d in self.dmas):
            raise KernelError(errno.EBUSY, "a vaddr is invalidated")
        if group in self.groups:
            raise KernelError(errno.EINVAL, "group already attached")
        for start, last in group.iommu_group.iova_reserved():
            if self._overlapping(start, last + 1):
                raise KernelError(
                    errno.EINVAL, "reserved region overlaps an existing mapping"
                )
        self.groups.append(group)
        group.iommu_group.attach_domain(self.domain)

    def detach_group(self, group: VfioGroup) -> None:
        if group in self.groups:
            self.groups.remove(group)
            group.iommu_group.attach_domain(None)

    def release(self) -> None:
        """The last group left the container: drop every mapping."""
        for dma in list(self.dmas):
            self._remove(dma)
        for group in list(self.groups):
            self.detach_group(group)

    def _remove(self, dma: VfioDma) -> None:
        self.domain.unmap(dma.iova, dma.size)
        account_locked_vm(dma.mm, dma.size, inc=False)
        self.dmas.remove(dma)
        self.dma_avail += 1


def vfio_iommu_type1_get_info(it: VfioIommuType1, ucmd: Ucmd) -> int:
    info = ucmd.cmd
    ranges = it.iova_ranges()
    caps: list[CStruct | bytes] = [
        V.VfioIommuType1InfoCapMigration(
            flags=1,
            pgsize_bitmap=it.pgsize_bitmap,
            max_dirty_bitmap_size=DIRTY_BITMAP_SIZE_MAX,
        ),
        V.VfioIommuType1InfoDmaAvail(avail=it.dma_avail),
    ]
    if ranges:
        caps.append(V.vfio_iova_range_cap(ranges))
    base = V.VfioIommuType1Info.SIZE
    chain = vfio_info_cap_chain(caps, base)
    flags = V.VFIO_IOMMU_INFO_PGSIZES | V.VFIO_IOMMU_INFO_CAPS
    argsz, cap_offset = info.argsz, 0
    if argsz < base + len(chain):
        argsz = base + len(chain)  # tell the user how much to allocate
    else:
        cap_offset = base
        ucmd.copy_to(base, chain)
    # min(argsz, sizeof(info)) bytes go back: cap_offset only to callers that have it
    ucmd.respond(V.VfioIommuType1Info(argsz, flags, it.pgsize_bitmap, cap_offset, 0))
    return 0


def vfio_dma_do_map(it: VfioIommuType1, ucmd: Ucmd) -> int:
    m = ucmd.cmd
    caller = ucmd.caller
    known = (
        V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE | V.VFIO_DMA_MAP_FLAG_VADDR
    )
    if m.flags & ~known:
        raise KernelError(errno.EINVAL, "unknown MAP_DMA flags")
    iova, vaddr, size = m.iova, m.vaddr, m.size
    if size == 0:
        raise KernelError(errno.EINVAL, "size 0")
    if iova + size - 1 > U64_MAX or vaddr + size - 1 > U64_MAX:
        raise KernelError(errno.EOVERFLOW, "range wraps")
    rw = m.flags & (V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE)
    set_vaddr = m.flags & V.VFIO_DMA_MAP_FLAG_VADDR
    if (rw and set_vaddr) or (not rw and not set_vaddr):
        raise KernelError(errno.EINVAL, "need READ/WRITE, or VADDR alone")
    pg = it.pgsize
    if (size | iova | vaddr) & (pg - 1):
        raise KernelError(errno.EINVAL, f"not aligned to {pg:#x}")
    end = iova + size
    if set_vaddr:
        found = it._overlapping(iova, end)
        if not found:
            raise KernelError(errno.ENOENT, "no mapping to update")
        dma = found[0]
        if (
            len(found) > 1
            or dma.iova != iova
            or dma.size != size
            or not dma.vaddr_invalid
        ):
            raise KernelError(errno.EINVAL, "VADDR must match one invalidated mapping")
        caller.mm.check_range(vaddr, size, write=bool(dma.prot & IOMMU_WRITE))
        vfio_change_dma_owner(dma, caller)
        it.domain.unmap(iova, size)
        it.domain.map(iova, size, caller.mm, vaddr, dma.prot)
        dma.vaddr, dma.vaddr_invalid = vaddr, False
        return 0
    if it._overlapping(iova, end):
        raise KernelError(errno.EEXIST, f"{iova:#x}+{size:#x} overlaps a mapping")
    if not it.dma_avail:
        raise KernelError(errno.ENOSPC, "dma_entry_limit reached")
    ranges = it.iova_ranges()
    if ranges and not any(lo <= iova and end - 1 <= hi for lo, hi in ranges):
        raise KernelError(
            errno.EINVAL, f"{iova:#x}+{size:#x} outside the valid IOVA ranges"
        )
    prot = (IOMMU_READ if m.flags & V.VFIO_DMA_MAP_FLAG_READ else 0) | (
        IOMMU_WRITE if m.flags & V.VFIO_DMA_MAP_FLAG_WRITE else 0
    )
    mm = caller.mm
    # pinning: the pages must be mapped in the caller (EFAULT) and fit RLIMIT_MEMLOCK
    mm.check_range(vaddr, size, write=bool(prot & IOMMU_WRITE))
    lock_cap = caller.capable(CAP_IPC_LOCK)
    account_locked_vm(mm, size, bypass_rlim=lock_cap)  # vfio_lock_acct(): ENOMEM
    it.domain.map(iova, size, mm, vaddr, prot)
    dma = VfioDma(iova, size, vaddr, prot, mm, lock_cap)
    bisect.insort(it.dmas, dma, key=lambda d: d.iova)
    it.dma_avail -= 1
    return 0


def vfio_change_dma_owner(dma: VfioDma, caller: Caller) -> None:
    """VADDR from another process moves the charge: the new owner is charged under its
    own limit and capability first (ENOMEM leaves the mapping as it was), then the old
    one is credited (vfio_iommu_type1.c)."""
    if caller.mm is dma.mm:
        return
    lock_cap = caller.capable(CAP_IPC_LOCK)
    account_locked_vm(caller.mm, dma.size, bypass_rlim=lock_cap)
    account_locked_vm(dma.mm, dma.size, inc=False)
    dma.mm, dma.lock_cap = caller.mm, lock_cap


def vfio_dma_do_unmap(it: VfioIommuType1, ucmd: Ucmd) -> int:
    u = ucmd.cmd
    known = (
        V.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP
        | V.VFIO_DMA_UNMAP_FLAG_ALL
        | V.VFIO_DMA_UNMAP_FLAG_VADDR
    )
    if u.flags & ~known:
        raise KernelError(errno.EINVAL, "unknown UNMAP_DMA flags")
    dirty = u.flags & V.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP
    unmap_all = u.flags & V.VFIO_DMA_UNMAP_FLAG_ALL
    inval = u.flags & V.VFIO_DMA_UNMAP_FLAG_VADDR
    if dirty and (unmap_all or inval):
        raise KernelError(errno.EINVAL, "GET_DIRTY_BITMAP with ALL or VADDR")
    if dirty and ucmd.argsz < V.VfioIommuType1DmaUnmap.SIZE + V.VfioBitmap.SIZE:
        raise KernelError(errno.EINVAL, "argsz too small for the bitmap")
    pg = it.pgsize
    iova, size = u.iova, u.size
    if iova & (pg - 1):
        raise KernelError(errno.EINVAL, "unaligned iova")
    if unmap_all:
        if iova or size:
            raise KernelError(errno.EINVAL, "ALL needs iova = size = 0")
        end = 1 << 64
    else:
        if size == 0 or size & (pg - 1):
            raise KernelError(errno.EINVAL, "size 0 or unaligned")
        if iova + size - 1 > U64_MAX:
            raise KernelError(errno.EOVERFLOW, "range wraps")
        end = iova + size
    bitmap = None
    if dirty:
        raw = ucmd.caller.copy_from_user(
            ucmd.arg + V.VfioIommuType1DmaUnmap.SIZE, V.VfioBitmap.SIZE
        )
        bitmap = V.VfioBitmap.unpack_from(raw)
        _check_bitmap(it, bitmap, size)
    found = it._overlapping(iova, end)
    if (
        it.v2
        and not unmap_all
        and found
        and (found[0].iova < iova or found[-1].end > end)
    ):
        raise KernelError(errno.EINVAL, "type1v2 cannot split a mapping")
    if not it.v2 and found and found[0].iova < iova:
        # v1: a mapping that starts before iova stops the walk: nothing unmapped
        found = []
    if not it.v2:
        found = [d for d in found if d.iova < end]
    if bitmap is not None:
        _write_bitmap(it, ucmd.caller, bitmap, iova, size)
    unmapped = 0
    if inval:
        if any(d.vaddr_invalid for d in found):
            raise KernelError(errno.EINVAL, "vaddr already invalidated")
        for d in found:
            d.vaddr_invalid = True
            unmapped += d.size
    else:
        for d in found:
            unmapped += d.size
            it._remove(d)
    out = V.VfioIommuType1DmaUnmap(u.argsz, u.flags, u.iova, unmapped)
    ucmd.caller.copy_to_user(ucmd.arg, out.pack())
    return 0


def vfio_iommu_type1_dirty_pages(it: VfioIommuType1, ucmd: Ucmd) -> int:
    d = ucmd.cmd
    allowed = (
        V.VFIO_IOMMU_DIRTY_PAGES_FLAG_START
        | V.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP
        | V.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP
    )
    if not it.v2:
        raise KernelError(errno.EACCES, "dirty tracking needs type1v2")
    if d.flags & ~allowed or d.flags.bit_count() != 1:
        raise KernelError(errno.EINVAL, "exactly one of START, STOP, GET_BITMAP")
    if d.flags & V.VFIO_IOMMU_DIRTY_PAGES_FLAG_START:
        it.dirty_tracking = True
        return 0
    if d.flags & V.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP:
        it.dirty_tracking = False
        return 0
    if (
        ucmd.argsz
        < V.VfioIommuType1DirtyBitmap.SIZE + V.VfioIommuType1DirtyBitmapGet.SIZE
    ):
        raise KernelError(errno.EINVAL, "argsz too small for the range")
    # data[] follows the header: the range to report
    raw = ucmd.caller.copy_from_user(
        ucmd.arg + V.VfioIommuType1DirtyBitmap.SIZE, V.VfioIommuType1DirtyBitmapGet.SIZE
    )
    rng = V.VfioIommuType1DirtyBitmapGet.unpack_from(raw)
    bitmap = V.VfioBitmap.unpack_from(rng.bitmap)
    pg = it.pgsize
    if rng.iova + rng.size - 1 > U64_MAX:
        raise KernelError(errno.EOVERFLOW, "range wraps")
    if (rng.iova | rng.size) & (pg - 1):
        raise KernelError(errno.EINVAL, "range not aligned to the page size")
    _check_bitmap(it, bitmap, rng.size)
    found = it._overlapping(rng.iova, rng.iova + rng.size)
    if found and (found[0].iova < rng.iova or found[-1].end > rng.iova + rng.size):
        raise KernelError(errno.EINVAL, "range bisects a mapping")
    _write_bitmap(it, ucmd.caller, bitmap, rng.iova, rng.size)
    return 0


def _check_bitmap(it: VfioIommuType1, bitmap: V.VfioBitmap, size: int) -> None:
    """vfio_iommu_type1: one bit per page, in u64 words, at most 256 MiB, tracking on."""
    pg = it.pgsize
    npages = size // pg
    need = (npages + 63) // 64 * 8
    if (
        not size
        or not npages
        or bitmap.size > DIRTY_BITMAP_SIZE_MAX
        or bitmap.size < need
    ):
        raise KernelError(errno.EINVAL, "bitmap size")
    if not it.dirty_tracking or bitmap.pgsize != pg:
        raise KernelError(errno.EINVAL, "dirty tracking off or bitmap pgsize differs")


def _write_bitmap(
    it: VfioIommuType1, caller: Caller, bitmap: V.VfioBitmap, iova: int, size: int
) -> None:
    """Every pinned page counts as dirty: the device may have written any of them (what
    type1 reports without an IOMMU that tracks dirty pages)."""
    pg = it.pgsize
    bits = 0
    for d in it._overlapping(iova, iova + size):
        first = (max(d.iova, iova) - iova) // pg
        last = (min(d.end, iova + size) - iova) // pg
        bits |= ((1 << (last - first)) - 1) << first
    nbytes = ((size // pg) + 63) // 64 * 8
    caller.copy_to_user(bitmap.data, bits.to_bytes(nbytes, "little"))


IOCTLS: IoctlTable[VfioIommuType1] = IoctlTable(
    [
        IoctlOp(
            V.VFIO_IOMMU_DIRTY_PAGES,
            "VFIO_IOMMU_DIRTY_PAGES",
            vfio_iommu_type1_dirty_pages,
            ArgKind.ARGSZ,
            V.VfioIommuType1DirtyBitmap,
            "flags",
        ),
        IoctlOp(
            V.VFIO_IOMMU_GET_INFO,
            "VFIO_IOMMU_GET_INFO",
            vfio_iommu_type1_get_info,
            ArgKind.ARGSZ,
            V.VfioIommuType1Info,
            "iova_pgsizes",
        ),
        IoctlOp(
            V.VFIO_IOMMU_MAP_DMA,
            "VFIO_IOMMU_MAP_DMA",
            vfio_dma_do_map,
            ArgKind.ARGSZ,
            V.VfioIommuType1DmaMap,
            "size",
        ),
        IoctlOp(
            V.VFIO_IOMMU_UNMAP_DMA,
            "VFIO_IOMMU_UNMAP_DMA",
            vfio_dma_do_unmap,
            ArgKind.ARGSZ,
            V.VfioIommuType1DmaUnmap,
            "size",
        ),
    ]
)


@attrs.frozen
class VfioIommuType1Ops:
    """``vfio_iommu_driver_ops_type1``: what a container asks before it has a backend."""

    noiommu: bool = False

    def check_extension(self, ext: int) -> int:
        """Without a container's state: the types and UNMAP_ALL (DMA_CC_IOMMU and
        UPDATE_VADDR need one)."""
        types = (V.VFIO_TYPE1_IOMMU, V.VFIO_TYPE1v2_IOMMU, V.VFIO_UNMAP_ALL)
        return 1 if ext in types else 0

    def open(
        self, arg: int, caller: Caller, options: VfioOptions
    ) -> VfioIommuType1 | None:
        """``vfio_iommu_type1_open``: type1 (v1) or v2; the retired nesting type is v2."""
        if arg == V.VFIO_TYPE1_IOMMU:
            return VfioIommuType1(options, v2=False)
        if arg in (V.VFIO_TYPE1v2_IOMMU, V.VFIO_TYPE1_NESTING_IOMMU):
            return VfioIommuType1(options, v2=True)
        return None


VFIO_IOMMU_TYPE1_OPS = VfioIommuType1Ops()
