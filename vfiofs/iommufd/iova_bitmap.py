"""Mirror of drivers/iommu/iommufd/iova_bitmap.c and the range checks of
``iommufd_check_iova_range`` (io_pagetable.c) for IOMMU_HWPT_GET_DIRTY_BITMAP.

The bitmap lives in user memory: bit ``n`` of u64 word ``n // 64`` stands for the
``page_size`` bytes at ``iova + n * page_size``. Bits are only ever set (the kernel
ORs into the pinned bitmap pages), so the caller clears the bitmap first.
"""

from __future__ import annotations

import errno

from ..errors import KernelError
from ..uaccess import Caller

U64_MAX = (1 << 64) - 1


def iova_bitmap_check(alignment: int, iova: int, length: int, page_size: int) -> None:
    """iommufd_check_iova_range(): EOVERFLOW for a wrapping range, EINVAL for a range
    or page size that does not fit the IOAS alignment."""
    last = iova + length - 1
    if length == 0 or last > U64_MAX:
        raise KernelError(errno.EOVERFLOW, "iova + length wraps")
    align = max(alignment, 1)
    if iova & (align - 1) or (last + 1) & (align - 1):
        raise KernelError(errno.EINVAL, f"range not aligned to {align:#x}")
    if not page_size:
        raise KernelError(errno.EINVAL, "page_size 0")
    if page_size & (page_size - 1):
        # iova_bitmap_alloc() takes __ffs(page_size): a power of two in practice
        raise KernelError(errno.EINVAL, "page_size not a power of two")
    if iova & (page_size - 1) or (last + 1) & (page_size - 1):
        raise KernelError(
            errno.EINVAL, f"range not aligned to page_size {page_size:#x}"
        )


def iova_bitmap_set(
    caller: Caller,
    data: int,
    iova: int,
    length: int,
    page_size: int,
    dirty: list[tuple[int, int]],
) -> None:
    """Set the bits of every dirty ``(start, size)`` range, clamped to the bitmap's
    range, read-modify-write on the user's u64 words (EFAULT if unreachable)."""
    if not dirty:
        return
    shift = page_size.bit_length() - 1
    nbits = length >> shift
    words: dict[int, int] = {}
    for start, size in dirty:
        lo, hi = max(start, iova), min(start + size, iova + length)
        if lo >= hi:
            continue
        first, last = (lo - iova) >> shift, min((hi - 1 - iova) >> shift, nbits - 1)
        for bit in range(first, last + 1):
            words[bit >> 6] = words.get(bit >> 6, 0) | 1 << (bit & 63)
    for w, bits in sorted(words.items()):
        addr = data + 8 * w
        old = int.from_bytes(caller.copy_from_user(addr, 8), "little")
        caller.copy_to_user(addr, (old | bits).to_bytes(8, "little"))
