"""Mirror of drivers/iommu/iommufd/iova_bitmap.c: IOMMU_HWPT_GET_DIRTY_BITMAP's bitmap
(its range is checked by ``iommufd_check_iova_range`` in io_pagetable.py).

The bitmap lives in user memory: bit ``n`` of u64 word ``n // 64`` stands for the
``page_size`` bytes at ``iova + n * page_size``. Bits are only ever set (the kernel
ORs into the pinned bitmap pages), so the caller clears the bitmap first.
"""

from __future__ import annotations

from ..uaccess import Caller


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
