"""Random MAP_DMA / UNMAP_DMA sequences through the real mount agree with a plain model of
the type1 rules, and the IOMMU page table (seen in the debugfs view) matches the model."""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.models import type1_map, type1_unmap

pytestmark = pytest.mark.mount

P = 4096
_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)


def call(fd: int, cmd: int, buf: ctypes.Array | int) -> int:  # type: ignore[type-arg]
    arg = buf if isinstance(buf, int) else ctypes.addressof(buf)
    rc = _libc.ioctl(fd, cmd, ctypes.c_void_p(arg))
    return -ctypes.get_errno() if rc < 0 else int(rc)


@pytest.fixture
def legacy_fds(start_daemon):  # type: ignore[no-untyped-def]
    d = start_daemon(["-m", "vfiofs", "mount", "{mnt}"])
    return d.mountpoint


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.booleans(),
    st.lists(
        st.tuples(
            st.sampled_from(["map", "unmap"]), st.integers(0, 15), st.integers(0, 6)
        ),
        max_size=20,
    ),
)
def test_type1_through_the_mount_matches_model(
    legacy_fds, v2: bool, seq: list[tuple[str, int, int]]
) -> None:  # type: ignore[no-untyped-def]
    mnt = legacy_fds
    buf = mmap.mmap(-1, 64 * P)
    va = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    c = os.open(mnt / "dev/vfio/vfio", os.O_RDWR)
    g = os.open(mnt / "dev/vfio/0", os.O_RDWR)
    try:
        assert call(g, 0x3B68, ctypes.c_int(c)) == 0  # type: ignore[arg-type]
        assert call(c, 0x3B66, 3 if v2 else 1) == 0
        maps: dict[int, int] = {}
        for op, page, npages in seq:
            iova, size = page * P, npages * P
            if op == "map":
                arg = ctypes.create_string_buffer(
                    struct.pack("<IIQQQ", 32, 3, va, iova, size), 32
                )
                assert call(c, 0x3B71, arg) == type1_map(maps, iova, size), (
                    op,
                    page,
                    npages,
                )
            else:
                arg = ctypes.create_string_buffer(
                    struct.pack("<IIQQ", 24, 0, iova, size), 24
                )
                got = call(c, 0x3B72, arg)
                if got == 0:
                    got = struct.unpack_from("<Q", arg.raw, 16)[0]
                assert got == type1_unmap(maps, iova, size, v2), (op, page, npages)
        lines = (
            (mnt / "sys/kernel/debug/vfiofs/iommu_groups/0/mappings")
            .read_text()
            .splitlines()
        )
        pages = set()
        for line in lines:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            pages |= set(range(lo // P, (hi + 1) // P))
        assert pages == {i // P + k for i, s in maps.items() for k in range(s // P)}
    finally:
        os.close(g)
        os.close(c)
