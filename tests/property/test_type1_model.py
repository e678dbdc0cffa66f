"""Random MAP_DMA / UNMAP_DMA sequences on type1 and type1v2 agree with a plain model of
the kernel's rules (results, errnos and the bytes reported unmapped)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from tests.models import type1_map, type1_unmap
from vfiofs.abi import vfio as V
from vfiofs.config import parse_topology
from vfiofs.errors import KernelError
from vfiofs.machine import Machine
from vfiofs.uaccess import FakeCaller, OurFile

TOPO = '[[group]]\nid = 0\n[[group.device]]\nbdf = "0000:00:04.0"\nvendor = 1\ndevice = 2\n'
PAGE = 4096
ops = st.lists(
    st.tuples(st.sampled_from(["map", "unmap"]), st.integers(0, 15), st.integers(0, 6)),
    max_size=25,
)


@settings(max_examples=80, deadline=None)
@given(st.booleans(), ops)
def test_type1_matches_model(v2: bool, seq: list[tuple[str, int, int]]) -> None:
    m = Machine(parse_topology(TOPO))
    caller = FakeCaller()
    c = m.core.open_container(caller, 0)
    gf = m.core.groups[0].open(caller, 0)
    caller.fds[3] = OurFile(c)
    gf.ioctl(
        caller, V.VFIO_GROUP_SET_CONTAINER, caller.alloc((3).to_bytes(4, "little"))
    )
    c.ioctl(
        caller, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU if v2 else V.VFIO_TYPE1_IOMMU
    )
    maps: dict[int, int] = {}
    base = caller.mm.base + (1 << 19)
    for op, page, npages in seq:
        iova, size = page * PAGE, npages * PAGE
        if op == "map":
            arg = caller.alloc(V.VfioIommuType1DmaMap(32, 3, base, iova, size).pack())
            want = type1_map(maps, iova, size)
            cmd = V.VFIO_IOMMU_MAP_DMA
        else:
            arg = caller.alloc(V.VfioIommuType1DmaUnmap(24, 0, iova, size).pack())
            want = type1_unmap(maps, iova, size, v2)
            cmd = V.VFIO_IOMMU_UNMAP_DMA
        try:
            got = c.ioctl(caller, cmd, arg)
            if op == "unmap":
                got = V.VfioIommuType1DmaUnmap.unpack_from(caller.mm.read(arg, 24)).size
        except KernelError as e:
            got = -e.errno
        assert got == want, (op, page, npages)
        pages = {
            m_.iova // PAGE + i
            for m_ in m.mappings("0000:00:04.0")
            for i in range(m_.size // PAGE)
        }
        assert pages == {
            i // PAGE + k for i, s in maps.items() for k in range(s // PAGE)
        }
