"""Device DMA through the IOMMU: IOVA -> (memory, address) -> that memory (a process's,
or a mapped file's). An unmapped IOVA or a missing permission is a `DmaFault`, and
nothing is written."""

from __future__ import annotations

from ..errors import KernelError
from ..uaccess import MemorySource
from .domain import IommuDomain
from .group import IommuGroup
from .pagetable import IOMMU_READ, IOMMU_WRITE


class DmaFault(Exception):
    """A DMA the IOMMU refused."""

    def __init__(self, iova: int, reason: str) -> None:
        super().__init__(f"DMA fault at {iova:#x}: {reason}")
        self.iova = iova
        self.reason = reason


def _domain(group: IommuGroup, iova: int) -> IommuDomain:
    """The domain the group's DMA goes through; DmaFault when there is none."""
    if group.noiommu or group.domain is None:
        raise DmaFault(iova, "no-iommu" if group.noiommu else "unmapped")
    return group.domain


def _chunks(
    group: IommuGroup, domain: IommuDomain, iova: int, size: int, prot: int
) -> list[tuple[MemorySource, int, int]]:
    out: list[tuple[MemorySource, int, int]] = []
    pos = iova
    end = iova + size
    while pos < end:
        t = domain.translate(pos)
        if t is None or not t.prot & prot:
            if domain.fault_handler is not None:
                # a page request for the domain's fault queue (IOMMU_HWPT_FAULT_ID)
                domain.fault_handler(group, pos, prot == IOMMU_WRITE)
            if t is None:
                raise DmaFault(pos, "unmapped")
            raise DmaFault(pos, "no-write" if prot == IOMMU_WRITE else "no-read")
        # a leaf maps contiguously: step by its size (4K, 2M, 1G; 2K on the mock)
        n = min(end - pos, t.page_size - (pos % t.page_size))
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
    domain = _domain(group, iova)
    for owner, vaddr, n in _chunks(group, domain, iova, size, IOMMU_READ):
        try:
            out += owner.read(vaddr, n)
        except KernelError as e:  # the process is gone or the page faulted
            raise DmaFault(iova + len(out), f"memory: {e}") from None
    return bytes(out)


def dma_write(group: IommuGroup, iova: int, data: bytes) -> None:
    """Write ``data`` at ``iova``; every page is checked before any byte is written.
    With dirty tracking on, the IO pages written are marked dirty."""
    domain = _domain(group, iova)
    pos = 0
    for owner, vaddr, n in _chunks(group, domain, iova, len(data), IOMMU_WRITE):
        try:
            owner.write(vaddr, data[pos : pos + n])
        except KernelError as e:
            raise DmaFault(iova + pos, f"memory: {e}") from None
        pos += n
    dirty = domain.dirty_table()
    if dirty is not None:
        dirty.record_dirty(iova, len(data))
