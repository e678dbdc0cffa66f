"""Device DMA through the IOMMU: IOVA -> (process, address) -> that process's memory.
An unmapped IOVA or a missing permission is a `DmaFault`, and nothing is written."""

from __future__ import annotations

from ..errors import KernelError
from ..uaccess import AddressSpace
from .group import IommuGroup
from .pagetable import IOMMU_READ, IOMMU_WRITE, PAGE_SIZE


class DmaFault(Exception):
    """A DMA the IOMMU refused."""

    def __init__(self, iova: int, reason: str) -> None:
        super().__init__(f"DMA fault at {iova:#x}: {reason}")
        self.iova = iova
        self.reason = reason


def _chunks(
    group: IommuGroup, iova: int, size: int, prot: int
) -> list[tuple[AddressSpace, int, int]]:
    domain = group.domain
    if group.noiommu or domain is None:
        raise DmaFault(iova, "no-iommu" if group.noiommu else "unmapped")
    out: list[tuple[AddressSpace, int, int]] = []
    pos = iova
    end = iova + size
    while pos < end:
        t = domain.translate(pos)
        if t is None:
            raise DmaFault(pos, "unmapped")
        if not t.prot & prot:
            raise DmaFault(pos, "no-write" if prot == IOMMU_WRITE else "no-read")
        n = min(end - pos, PAGE_SIZE - (pos % PAGE_SIZE))
        if out and out[-1][0] is t.owner and out[-1][1] + out[-1][2] == t.vaddr:
            owner, vaddr, length = out[-1]
            out[-1] = (owner, vaddr, length + n)
        else:
            out.append((t.owner, t.vaddr, n))
        pos += n
    return out


def dma_read(group: IommuGroup, iova: int, size: int) -> bytes:
    """Read ``size`` bytes at ``iova`` as the device would. Raises DmaFault."""
    out = bytearray()
    for owner, vaddr, n in _chunks(group, iova, size, IOMMU_READ):
        try:
            out += owner.read(vaddr, n)
        except KernelError as e:  # the process is gone or the page faulted
            raise DmaFault(iova + len(out), f"memory: {e}") from None
    return bytes(out)


def dma_write(group: IommuGroup, iova: int, data: bytes) -> None:
    """Write ``data`` at ``iova``; every page is checked before any byte is written."""
    pos = 0
    for owner, vaddr, n in _chunks(group, iova, len(data), IOMMU_WRITE):
        try:
            owner.write(vaddr, data[pos : pos + n])
        except KernelError as e:
            raise DmaFault(iova + pos, f"memory: {e}") from None
        pos += n
