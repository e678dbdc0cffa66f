"""The VFIO container served by iommufd (vfio_compat.c): MAP_DMA and UNMAP_DMA go
through the io_pagetable functions IOAS_MAP and IOAS_UNMAP use, so they answer with
the same errnos as the kernel's iopt_map_user_pages / iopt_unmap_iova."""

from __future__ import annotations

import errno

import pytest

from tests.unit.helpers import caller, legacy_group
from vfiofs.abi import vfio as V
from vfiofs.config import default_topology
from vfiofs.errors import KernelError
from vfiofs.iommufd.iommufd_private import IommufdCtx
from vfiofs.iommufd.main import iommufd_fops_open
from vfiofs.machine import Machine
from vfiofs.uaccess import FakeCaller

MB = 1 << 20
U64 = 1 << 64


@pytest.fixture
def c() -> FakeCaller:
    return caller(8 * MB)


@pytest.fixture
def ctx(c: FakeCaller) -> IommufdCtx:
    """An iommufd used as the container of group 0, with its device open (so the
    compat IOAS has a domain and a 4 KiB IOVA alignment)."""
    ictx = iommufd_fops_open()
    legacy_group(Machine(default_topology()), c, ictx).get_device_fd(c, "0000:00:04.0")
    return ictx


def dma_map(ctx: IommufdCtx, c: FakeCaller, iova: int, size: int, va: int = 0) -> int:
    st = V.VfioIommuType1DmaMap(32, 3, va or c.mm.base, iova, size)
    try:
        return ctx.ioctl(c, V.VFIO_IOMMU_MAP_DMA, c.alloc(st.pack()))
    except KernelError as e:
        return -e.errno


def dma_unmap(
    ctx: IommufdCtx, c: FakeCaller, iova: int, size: int, flags: int = 0
) -> tuple[int, int]:
    arg = c.alloc(V.VfioIommuType1DmaUnmap(24, flags, iova, size).pack())
    try:
        rc = ctx.ioctl(c, V.VFIO_IOMMU_UNMAP_DMA, arg)
    except KernelError as e:
        rc = -e.errno
    return rc, V.VfioIommuType1DmaUnmap.unpack_from(c.mm.read(arg, 24)).size


def test_map_dma_wrapping_iova_is_eoverflow(ctx: IommufdCtx, c: FakeCaller) -> None:
    """iopt_check_iova(): check_add_overflow(iova, length - 1) -> EOVERFLOW."""
    assert dma_map(ctx, c, U64 - 4096, 2 * 4096) == -errno.EOVERFLOW
    assert dma_map(ctx, c, U64 - MB, 2 * MB) == -errno.EOVERFLOW


def test_map_dma_wrapping_vaddr_is_eoverflow(ctx: IommufdCtx, c: FakeCaller) -> None:
    """iopt_alloc_pages(): check_add_overflow(uptr, length) -> EOVERFLOW."""
    assert dma_map(ctx, c, 0, 2 * 4096, va=U64 - 4096) == -errno.EOVERFLOW


def test_map_dma_empty_or_huge_length_is_einval(ctx: IommufdCtx, c: FakeCaller) -> None:
    """iopt_alloc_pages(): length 0 or above SIZE_MAX - PAGE_SIZE -> EINVAL."""
    assert dma_map(ctx, c, 0, 0) == -errno.EINVAL
    assert dma_map(ctx, c, 0, U64 - 1) == -errno.EINVAL


def test_unmap_dma_wrapping_range_is_eoverflow(ctx: IommufdCtx, c: FakeCaller) -> None:
    """iopt_unmap_iova(): check_add_overflow(iova, length - 1) -> EOVERFLOW, with
    ``size`` written back as 0."""
    assert dma_map(ctx, c, 0, MB) == 0
    assert dma_unmap(ctx, c, U64 - 4096, 2 * 4096) == (-errno.EOVERFLOW, 0)
    assert dma_unmap(ctx, c, 0, 0) == (-errno.EINVAL, 0)
    assert dma_unmap(ctx, c, 0, MB) == (0, MB)


def test_unmap_dma_stops_at_a_mapping_it_would_split(
    ctx: IommufdCtx, c: FakeCaller
) -> None:
    """iopt_unmap_iova_range(): areas go in IOVA order until one sticks out (ENOENT);
    those removed stay removed and ``size`` says how much; an empty range is ENOENT."""
    assert dma_map(ctx, c, 0, MB) == 0
    assert dma_map(ctx, c, MB, 2 * MB, va=c.mm.base + MB) == 0
    assert dma_unmap(ctx, c, 0, 2 * MB) == (-errno.ENOENT, MB)
    assert dma_unmap(ctx, c, 8 * MB, MB) == (-errno.ENOENT, 0)
    assert dma_unmap(ctx, c, 0, 0, V.VFIO_DMA_UNMAP_FLAG_ALL) == (0, 2 * MB)
    assert dma_unmap(ctx, c, 0, 0, V.VFIO_DMA_UNMAP_FLAG_ALL) == (0, 0)


def test_get_info_caps_are_aligned_to_8(ctx: IommufdCtx, c: FakeCaller) -> None:
    """iommufd_vfio_iommu_get_info(): DMA_AVAIL (12 bytes, avail U32_MAX) then
    IOVA_RANGE, each ALIGN()ed to 8; argsz always says the full size; caps only when
    they fit."""
    arg = c.alloc(V.VfioIommuType1Info(argsz=24).pack())
    assert ctx.ioctl(c, V.VFIO_IOMMU_GET_INFO, arg) == 0
    info = V.VfioIommuType1Info.unpack_from(c.mm.read(arg, 24))
    assert (info.argsz, info.flags, info.cap_offset) == (56 + 16 * 2, 3, 0)
    arg = c.alloc(V.VfioIommuType1Info(argsz=info.argsz).pack() + bytes(info.argsz))
    assert ctx.ioctl(c, V.VFIO_IOMMU_GET_INFO, arg) == 0
    buf = c.mm.read(arg, info.argsz)
    assert V.VfioIommuType1Info.unpack_from(buf).cap_offset == 24
    avail = V.VfioIommuType1InfoDmaAvail.unpack_from(buf, 24)
    assert (avail.id, avail.next, avail.avail) == (3, 40, 0xFFFFFFFF)
    assert buf[36:40] == bytes(4)  # the padding
    iova = V.VfioIommuType1InfoCapIovaRange.unpack_from(buf, 40)
    assert (iova.id, iova.next, iova.nr_iovas) == (1, 0, 2)
