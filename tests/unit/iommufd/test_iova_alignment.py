"""The IOVA alignment of an IOAS and the page-offset rule, as io_pagetable.c has them.

``iopt->iova_alignment`` is 1 with no domain, the largest smallest-IO-page of the
attached domains (4 KiB on the host IOMMU, 2 KiB on the mock), PAGE_SIZE once huge
pages are off or an access that pins pages is attached. A map's IOVA and length must be
multiples of it, and so must the memory's offset in its CPU page
(``iopt_insert_area``: ``area->page_offset & (iova_alignment - 1)``); the IOVA and the
memory need not share their page offset. Raising the alignment over an area that does
not suit it is EADDRINUSE (``iopt_check_iova_alignment``).
"""

from __future__ import annotations

import errno

import pytest

from vfiofs.abi import iommufd as I, iommufd_test as T, vfio as V
from vfiofs.uaccess import ForeignFile

from .conftest import MB, MOCK_TOPOLOGY, Env, memcpy

START = T.MOCK_APERTURE_START
HOST_TOPOLOGY = MOCK_TOPOLOGY.replace('iommu = "mock"\n', "")
FIXED_RW = (
    I.IOMMU_IOAS_MAP_FIXED_IOVA | I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE
)


def map_rc(env: Env, ioas: int, iova: int, length: int, va: int, flags: int) -> int:
    st = I.IommuIoasMap(40, flags, ioas, 0, va, length, iova)
    return int(env.call(I.IOMMU_IOAS_MAP, st)[0])


def alignment(env: Env, ioas: int) -> int:
    st = I.IommuIoasIovaRanges(32, ioas, 0, 0, 0, 0)
    _, out = env.call(I.IOMMU_IOAS_IOVA_RANGES, st)
    return int(out.out_iova_alignment)


def test_mock_domain_maps_the_second_half_of_a_page_at_a_page_aligned_iova(
    env: Env,
) -> None:
    """On the mock (2 KiB IO pages) IOVA START maps user memory at page offset 0x800,
    and device DMA through it reaches exactly those bytes."""
    i = env.ioas()
    df, _ = env.bind_pci(0)
    env.attach_pci(df, i)
    assert alignment(env, i) == 2048
    src = env.buf + 0x800  # page offset 0x800
    env.c.mm.write(src, b"second half of the page")
    assert map_rc(env, i, START, 0x1000, src, FIXED_RW) == 0
    # the other way round: IOVA at page offset 0x800, memory page aligned
    dst = env.buf + 0x10000
    assert map_rc(env, i, START + 0x10800, 0x1000, dst, FIXED_RW) == 0
    assert memcpy(env, START, START + 0x10800, 23) == 2
    assert env.c.mm.read(dst, 23) == b"second half of the page"
    # an IOVA in the second IO page of START reaches src + 0x800
    env.c.mm.write(src + 0x800, b"next IO page")
    assert memcpy(env, START + 0x800, START + 0x10800, 12) == 2
    assert env.c.mm.read(dst, 12) == b"next IO page"


@pytest.mark.parametrize(
    ("iova_off", "va_off", "length", "rc"),
    [
        (0, 0x400, 0x1000, -errno.EINVAL),  # page offset not a multiple of 2 KiB
        (0x400, 0, 0x1000, -errno.EINVAL),  # IOVA not a multiple of 2 KiB
        (0, 0, 0xC00, -errno.EINVAL),  # length not a multiple of 2 KiB
        (0x800, 0x800, 0x800, 0),
        (0x1800, 0, 0x2800, 0),
    ],
)
def test_mock_alignment_is_2k(
    env: Env, iova_off: int, va_off: int, length: int, rc: int
) -> None:
    i = env.ioas()
    env.mock_domain(i)
    assert map_rc(env, i, START + iova_off, length, env.buf + va_off, FIXED_RW) == rc


def test_mock_picked_iova_keeps_the_page_offset(env: Env) -> None:
    """iopt_alloc_iova(): the IOVA it picks carries the user address's page offset."""
    i = env.ioas()
    env.mock_domain(i)
    st = I.IommuIoasMap(40, 6, i, 0, env.buf + 0x800, 0x800, 0)
    rc, out = env.call(I.IOMMU_IOAS_MAP, st)
    assert rc == 0 and out.iova % 0x1000 == 0x800 and out.iova >= START


def test_mock_map_file_at_a_2k_page_offset(env: Env) -> None:
    from .test_dirty_fault_file import FakeFile

    i = env.ioas()
    env.mock_domain(i)

    def map_file(start: int, iova: int) -> int:
        env.c.fds[9] = ForeignFile("file", file=FakeFile(size=MB, base=0))
        st = I.IommuIoasMapFile(40, FIXED_RW, i, 9, start, 0x1000, iova)
        return int(env.call(I.IOMMU_IOAS_MAP_FILE, st)[0])

    assert map_file(0x800, START) == 0
    assert map_file(0x400, START + MB) == -errno.EINVAL


def test_host_domain_needs_page_aligned_memory() -> None:
    """The host IOMMU's smallest IO page is 4 KiB: the memory's page offset must be 0,
    whatever the IOVA."""
    env = Env(HOST_TOPOLOGY)
    i = env.ioas()
    df, _ = env.bind_pci(0)
    env.attach_pci(df, i)
    assert alignment(env, i) == 4096
    assert map_rc(env, i, 0x100000, 0x1000, env.buf + 0x800, FIXED_RW) == -errno.EINVAL
    assert map_rc(env, i, 0x100800, 0x1000, env.buf, FIXED_RW) == -errno.EINVAL
    assert map_rc(env, i, 0x100000, 0x1000, env.buf, FIXED_RW) == 0
    # a picked IOVA: the user address is less aligned than the table (EINVAL)
    st = I.IommuIoasMap(40, 6, i, 0, env.buf + 0x800, 0x800, 0)
    assert env.call(I.IOMMU_IOAS_MAP, st)[0] == -errno.EINVAL


def test_without_a_domain_any_offset_maps_then_attach_is_eaddrinuse() -> None:
    """No domain: alignment 1, any IOVA and page offset. Attaching a device then raises
    the alignment to 4 KiB over an area that does not suit it: EADDRINUSE, and the
    device stays detached."""
    env = Env(HOST_TOPOLOGY)
    i = env.ioas()
    assert alignment(env, i) == 1
    assert map_rc(env, i, 0x100123, 0x1000, env.buf + 0x123, FIXED_RW) == 0
    df, _ = env.bind_pci(0)
    arg = env.c.alloc(V.VfioDeviceAttachIommufdPt(16, 0, i, 0).pack())
    with pytest.raises(Exception) as e:
        df.ioctl(env.c, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, arg)
    assert getattr(e.value, "errno", None) == errno.EADDRINUSE
    assert env.m.devices["0000:00:04.0"].iommu_group.domain is None  # type: ignore[union-attr]
    assert alignment(env, i) == 1
    # once the area is gone, the attach works
    st = I.IommuIoasUnmap(24, i, 0, (1 << 64) - 1)
    assert env.call(I.IOMMU_IOAS_UNMAP, st)[0] == 0
    assert env.attach_pci(df, i) > 0


def test_huge_pages_off_raises_the_alignment_to_a_page() -> None:
    """IOMMU_OPTION_HUGE_PAGES = 0 (iopt_disable_large_pages): PAGE_SIZE alignment, so
    an area at a page offset refuses it (EADDRINUSE) and new maps need whole pages."""
    env = Env(HOST_TOPOLOGY)
    i = env.ioas()

    def huge(val: int) -> int:
        st = I.IommuOption(
            24, I.IOMMU_OPTION_HUGE_PAGES, I.IOMMU_OPTION_OP_SET, 0, i, val
        )
        return int(env.call(I.IOMMU_OPTION, st)[0])

    assert map_rc(env, i, 0x100800, 0x800, env.buf + 0x800, FIXED_RW) == 0
    assert huge(0) == -errno.EADDRINUSE
    assert (
        env.call(I.IOMMU_IOAS_UNMAP, I.IommuIoasUnmap(24, i, 0x100800, 0x800))[0] == 0
    )
    assert huge(0) == 0
    assert alignment(env, i) == 4096
    assert map_rc(env, i, 0x100800, 0x800, env.buf + 0x800, FIXED_RW) == -errno.EINVAL
    assert huge(1) == 0
    assert alignment(env, i) == 1


def test_an_access_that_pins_needs_page_aligned_areas(env: Env) -> None:
    """iopt_add_access(): an access that pins pages works in CPU pages; attaching one to
    an IOAS holding an area at a 2 KiB page offset is EADDRINUSE."""
    i = env.ioas()
    assert map_rc(env, i, START + 0x800, 0x800, env.buf + 0x800, FIXED_RW) == 0
    pin = T.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES
    op = T.IOMMU_TEST_OP_CREATE_ACCESS
    assert env.test(op, i, T.CreateAccess(0, pin))[0] == -errno.EADDRINUSE
    assert env.test(op, i, T.CreateAccess(0, 0))[0] == 0  # rw only: alignment 1
