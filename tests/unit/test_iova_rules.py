"""The IOVA rules type1 and iommufd share (vfiofs/iommu/iova.py), checked on their own
and through both backends: the same reserved regions leave the same usable IOVA."""

from __future__ import annotations

import struct

import attrs

from tests.unit.helpers import legacy_group
from vfiofs.abi import iommufd as I, vfio as V
from vfiofs.config import default_topology
from vfiofs.iommu.iova import iova_holes, iova_overlaps
from vfiofs.iommufd.main import iommufd_fops_open
from vfiofs.machine import Machine
from vfiofs.uaccess import FakeCaller, OurFile

U64_MAX = (1 << 64) - 1
MSI = (0xFEE00000, 0xFEEFFFFF)


@attrs.frozen
class Rec:
    iova: int
    last: int


def test_iova_holes_merges_overlapping_and_adjacent_reserved() -> None:
    reserved = [(0x5000, 0x5FFF), (0x1000, 0x1FFF), (0x1800, 0x2FFF), (0x3000, 0x3FFF)]
    assert iova_holes(0, 0xFFFF, reserved) == [
        (0, 0xFFF),
        (0x4000, 0x4FFF),
        (0x6000, 0xFFFF),
    ]


def test_iova_holes_clips_to_the_window() -> None:
    assert iova_holes(0x1000, 0x1FFF, [(0, 0x17FF), (0x1C00, 0x3000)]) == [
        (0x1800, 0x1BFF)
    ]
    assert iova_holes(0, U64_MAX, [(0, U64_MAX)]) == []
    assert iova_holes(0, U64_MAX, []) == [(0, U64_MAX)]


def test_iova_overlaps_finds_every_record_meeting_the_range() -> None:
    maps = [Rec(0x1000, 0x1FFF), Rec(0x3000, 0x3FFF), Rec(0x5000, 0x5FFF)]
    assert iova_overlaps(maps, 0x2000, 0x2FFF) == []
    assert iova_overlaps(maps, 0x1FFF, 0x3000) == maps[:2]
    assert iova_overlaps(maps, 0, U64_MAX) == maps
    assert iova_overlaps(maps, 0x6000, U64_MAX) == []


def _machine_with_regions() -> Machine:
    m = Machine(default_topology())
    group = m.devices["0000:00:04.0"].iommu_group
    assert group is not None
    group.reserved_regions += [
        (0x100000, 0x1FFFFF, "direct-relaxable"),  # RMRR a driver may take over
        (0x400000, 0x4FFFFF, "reserved"),
    ]
    return m


def _type1_ranges(c: FakeCaller) -> list[tuple[int, int]]:
    m = _machine_with_regions()
    cont = m.core.open_container(c, 0)
    legacy_group(m, c, cont)
    arg = c.alloc(V.VfioIommuType1Info(argsz=512).pack() + bytes(512))
    cont.ioctl(c, V.VFIO_IOMMU_GET_INFO, arg)
    buf = c.mm.read(arg, 512)
    off = V.VfioIommuType1Info.unpack_from(buf).cap_offset
    while True:
        hdr = V.VfioInfoCapHeader.unpack_from(buf, off)
        if hdr.id == V.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
            break
        off = hdr.next
    cap = V.VfioIommuType1InfoCapIovaRange.unpack_from(buf, off)
    base = off + V.VfioIommuType1InfoCapIovaRange.SIZE
    ranges = [
        V.VfioIovaRange.unpack_from(buf, base + 16 * i) for i in range(cap.nr_iovas)
    ]
    return [(r.start, r.end) for r in ranges]


def _iommufd_ranges(c: FakeCaller) -> list[tuple[int, int]]:
    m = _machine_with_regions()
    ctx = iommufd_fops_open()
    c.fds[7] = OurFile(ctx)
    df = m.tree.root.walk("dev/vfio/devices/vfio0").opener(c, 0)  # type: ignore[attr-defined]
    df.ioctl(
        c,
        V.VFIO_DEVICE_BIND_IOMMUFD,
        c.alloc(V.VfioDeviceBindIommufd(24, 0, 7, 0, 0).pack()),
    )
    arg = c.alloc(I.IommuIoasAlloc(12, 0, 0).pack())
    ctx.ioctl(c, I.IOMMU_IOAS_ALLOC, arg)
    ioas = I.IommuIoasAlloc.unpack_from(c.mm.read(arg, 12)).out_ioas_id
    df.ioctl(
        c,
        V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
        c.alloc(V.VfioDeviceAttachIommufdPt(16, 0, ioas, 0).pack()),
    )
    buf = c.alloc(bytes(16 * 8))
    arg = c.alloc(I.IommuIoasIovaRanges(32, ioas, 8, 0, buf, 0).pack())
    ctx.ioctl(c, I.IOMMU_IOAS_IOVA_RANGES, arg)
    n = I.IommuIoasIovaRanges.unpack_from(c.mm.read(arg, 32)).num_iovas
    return [struct.unpack_from("<QQ", c.mm.read(buf, 16 * n), 16 * i) for i in range(n)]


def test_direct_relaxable_regions_do_not_restrict_iova_in_either_backend() -> None:
    """vfio_iommu_resv_exclude() and iopt_table_enforce_dev_resv_regions() both skip
    IOMMU_RESV_DIRECT_RELAXABLE; every other reserved region is cut out."""
    c = FakeCaller()
    top = (1 << 48) - 1
    assert _type1_ranges(c) == [
        (0, 0x3FFFFF),
        (0x500000, MSI[0] - 1),
        (MSI[1] + 1, top),
    ]
    assert _iommufd_ranges(c) == [
        (0, 0x3FFFFF),
        (0x500000, MSI[0] - 1),
        (MSI[1] + 1, top),
    ]
