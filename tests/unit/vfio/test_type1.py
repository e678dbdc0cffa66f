"""The type1 backend: GET_INFO's capability chain, MAP_DMA and UNMAP_DMA checks in the
kernel's order (drivers/vfio/vfio_iommu_type1.c), accounting, and the page table behind
it."""

from __future__ import annotations

import errno
import struct

import pytest

from vfiofs.abi import vfio as V
from vfiofs.errors import KernelError
from vfiofs.uaccess import CAP_IPC_LOCK, FakeCaller

R, W, VADDR = (
    V.VFIO_DMA_MAP_FLAG_READ,
    V.VFIO_DMA_MAP_FLAG_WRITE,
    V.VFIO_DMA_MAP_FLAG_VADDR,
)
MB = 1 << 20


@pytest.fixture
def t1(env):  # type: ignore[no-untyped-def]
    return setup(env, V.VFIO_TYPE1v2_IOMMU)


def setup(env, kind: int):  # type: ignore[no-untyped-def]
    gf = env.group(3)
    c = env.container()
    env.set_container(gf, c)
    c.ioctl(env.caller, V.VFIO_SET_IOMMU, kind)
    env.caller.mm.size = 64 * MB
    env.caller.mm.__attrs_post_init__()
    return c


def dma_map(
    env,
    c,
    iova: int,
    size: int,
    *,
    vaddr: int | None = None,
    flags: int = R | W,
    argsz: int = 32,
    caller=None,
) -> int:  # type: ignore[no-untyped-def]
    caller = caller or env.caller
    v = caller.mm.base if vaddr is None else vaddr
    arg = caller.alloc(V.VfioIommuType1DmaMap(argsz, flags, v, iova, size).pack())
    try:
        return c.ioctl(caller, V.VFIO_IOMMU_MAP_DMA, arg)
    except KernelError as e:
        return -e.errno


def dma_unmap(env, c, iova: int, size: int, flags: int = 0) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    arg = env.caller.alloc(V.VfioIommuType1DmaUnmap(24, flags, iova, size).pack())
    try:
        rc = c.ioctl(env.caller, V.VFIO_IOMMU_UNMAP_DMA, arg)
    except KernelError as e:
        return -e.errno, -1
    return rc, V.VfioIommuType1DmaUnmap.unpack_from(env.caller.mm.read(arg, 24)).size


def test_get_info_caps_and_argsz_retry(env, t1) -> None:  # type: ignore[no-untyped-def]
    c = env.caller
    arg = c.alloc(V.VfioIommuType1Info(argsz=16).pack() + bytes(200))
    assert t1.ioctl(c, V.VFIO_IOMMU_GET_INFO, arg) == 0
    head = c.mm.read(arg, 24)
    argsz, flags, pgsizes = struct.unpack_from("<IIQ", head)
    assert (flags, pgsizes) == (3, 0x40201000)
    assert argsz == 84 + 16 * 2  # migration + dma_avail + iova ranges with 2 ranges
    assert head[16:] == bytes(8)  # a 16-byte caller gets nothing past its argsz
    arg = c.alloc(V.VfioIommuType1Info(argsz=argsz).pack() + bytes(argsz))
    assert t1.ioctl(c, V.VFIO_IOMMU_GET_INFO, arg) == 0
    buf = c.mm.read(arg, argsz)
    info = V.VfioIommuType1Info.unpack_from(buf)
    assert info.cap_offset == 24
    mig = V.VfioIommuType1InfoCapMigration.unpack_from(buf, 24)
    assert (mig.id, mig.next, mig.pgsize_bitmap) == (2, 56, 0x40201000)
    avail = V.VfioIommuType1InfoDmaAvail.unpack_from(buf, 56)
    assert (avail.id, avail.next, avail.avail) == (3, 68, 8)
    iova = V.VfioIommuType1InfoCapIovaRange.unpack_from(buf, 68)
    assert (iova.id, iova.next, iova.nr_iovas) == (1, 0, 2)
    ranges = [V.VfioIovaRange.unpack_from(buf, 84 + 16 * i) for i in range(2)]
    assert [(r.start, r.end) for r in ranges] == [
        (0, 0xFEDFFFFF),
        (0xFEF00000, (1 << 48) - 1),
    ]


def test_map_checks_in_kernel_order(env, t1) -> None:  # type: ignore[no-untyped-def]
    assert dma_map(env, t1, 0, MB, argsz=31) == -errno.EINVAL
    assert dma_map(env, t1, 0, MB, flags=R | 8) == -errno.EINVAL
    assert dma_map(env, t1, 0, 0) == -errno.EINVAL
    assert (
        dma_map(env, t1, (1 << 64) - 4096, 8192) == -errno.EOVERFLOW
    )  # wrap before alignment
    assert dma_map(env, t1, 0, MB, flags=0) == -errno.EINVAL
    assert dma_map(env, t1, 0, MB, flags=R | VADDR) == -errno.EINVAL
    assert dma_map(env, t1, 100, MB) == -errno.EINVAL  # unaligned
    assert dma_map(env, t1, 0xFEE00000, MB) == -errno.EINVAL  # MSI window
    assert dma_map(env, t1, 1 << 48, MB) == -errno.EINVAL  # outside the aperture
    assert (
        dma_map(env, t1, 0, MB, vaddr=0x7000_0000) == -errno.EFAULT
    )  # not mapped in the caller
    assert dma_map(env, t1, 0, MB) == 0
    assert dma_map(env, t1, 0, MB) == -errno.EEXIST
    assert dma_map(env, t1, MB - 4096, 8192) == -errno.EEXIST  # any overlap


def test_map_entry_limit_enospc_after_eexist(env, t1) -> None:  # type: ignore[no-untyped-def]
    for i in range(8):
        assert dma_map(env, t1, i * MB, 4096) == 0
    assert dma_map(env, t1, 0, 4096) == -errno.EEXIST
    assert dma_map(env, t1, 100 * MB, 4096) == -errno.ENOSPC
    assert dma_unmap(env, t1, 0, 4096) == (0, 4096)
    assert dma_map(env, t1, 100 * MB, 4096) == 0


def test_map_memlock_enomem_unless_cap_ipc_lock(env, t1) -> None:  # type: ignore[no-untyped-def]
    env.caller.mm.memlock = 2 * MB
    env.caller.caps = frozenset()
    assert dma_map(env, t1, 0, 2 * MB) == 0
    assert dma_map(env, t1, 4 * MB, 4096) == -errno.ENOMEM
    assert env.caller.mm.locked_vm == 2 * MB
    env.caller.caps = frozenset({CAP_IPC_LOCK})
    assert dma_map(env, t1, 4 * MB, 4096) == 0
    assert dma_unmap(env, t1, 0, 0, V.VFIO_DMA_UNMAP_FLAG_ALL) == (0, 2 * MB + 4096)
    assert env.caller.mm.locked_vm == 0


def test_map_read_only_memory_needs_read_only_mapping(env, t1) -> None:  # type: ignore[no-untyped-def]
    mm = env.caller.mm
    ro = mm.base + 32 * MB
    mm.readonly.append((ro, ro + MB))
    assert dma_map(env, t1, 0, MB, vaddr=ro) == -errno.EFAULT
    assert dma_map(env, t1, 0, MB, vaddr=ro, flags=R) == 0


def test_unmap_checks(env, t1) -> None:  # type: ignore[no-untyped-def]
    assert dma_unmap(env, t1, 0, 4096, 8)[0] == -errno.EINVAL
    assert (
        dma_unmap(
            env,
            t1,
            0,
            4096,
            V.VFIO_DMA_UNMAP_FLAG_ALL | V.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
        )[0]
        == -errno.EINVAL
    )
    assert dma_unmap(env, t1, 100, 4096)[0] == -errno.EINVAL
    assert dma_unmap(env, t1, 0, 0)[0] == -errno.EINVAL
    assert dma_unmap(env, t1, 4096, 4096, V.VFIO_DMA_UNMAP_FLAG_ALL)[0] == -errno.EINVAL
    assert dma_unmap(env, t1, (1 << 64) - 4096, 8192)[0] == -errno.EOVERFLOW
    assert dma_unmap(env, t1, 0, 4096) == (0, 0)  # nothing there: success, size 0


def test_unmap_v2_refuses_to_split(env, t1) -> None:  # type: ignore[no-untyped-def]
    assert dma_map(env, t1, 0, 2 * MB) == 0
    assert dma_unmap(env, t1, MB, MB)[0] == -errno.EINVAL
    assert dma_unmap(env, t1, 0, MB)[0] == -errno.EINVAL
    assert dma_unmap(env, t1, 0, 4 * MB) == (0, 2 * MB)


def test_unmap_v1_semantics(env) -> None:  # type: ignore[no-untyped-def]
    c = setup(env, V.VFIO_TYPE1_IOMMU)
    assert dma_map(env, c, 0, 2 * MB) == 0
    assert dma_unmap(env, c, MB, MB) == (0, 0)  # starts inside: untouched
    assert dma_unmap(env, c, 0, MB) == (0, 2 * MB)  # ends inside: whole mapping goes
    assert dma_map(env, c, 0, 4096) == 0
    dirty = env.caller.alloc(
        V.VfioIommuType1DirtyBitmap(8, V.VFIO_IOMMU_DIRTY_PAGES_FLAG_START).pack()
    )
    with pytest.raises(KernelError) as e:
        c.ioctl(env.caller, V.VFIO_IOMMU_DIRTY_PAGES, dirty)
    assert e.value.errno == errno.EACCES


def test_page_table_is_the_truth_for_dma(env, t1) -> None:  # type: ignore[no-untyped-def]
    mm = env.caller.mm
    assert dma_map(env, t1, 0x100000, MB, vaddr=mm.base + 4096 * 16) == 0
    maps = env.machine.mappings("0000:00:04.0")
    assert [(m.iova, m.size, m.vaddr, m.prot) for m in maps] == [
        (0x100000, MB, mm.base + 4096 * 16, 3)
    ]
    assert maps[0].owner is mm
    dma_unmap(env, t1, 0, 0, V.VFIO_DMA_UNMAP_FLAG_ALL)
    assert env.machine.mappings("0000:00:04.0") == []


def test_vaddr_invalidate_and_update(env, t1) -> None:  # type: ignore[no-untyped-def]
    mm = env.caller.mm
    assert dma_map(env, t1, 0, MB) == 0
    assert (
        dma_map(env, t1, 0, MB, vaddr=mm.base + MB, flags=VADDR) == -errno.EINVAL
    )  # not invalidated
    assert dma_unmap(env, t1, 0, MB, V.VFIO_DMA_UNMAP_FLAG_VADDR) == (0, MB)
    assert (
        dma_unmap(env, t1, 0, MB, V.VFIO_DMA_UNMAP_FLAG_VADDR)[0] == -errno.EINVAL
    )  # twice
    assert dma_map(env, t1, 8 * MB, MB, flags=VADDR) == -errno.ENOENT
    assert dma_map(env, t1, 0, MB, vaddr=mm.base + MB, flags=VADDR) == 0
    assert env.machine.mappings("0000:00:04.0")[0].vaddr == mm.base + MB


def test_vaddr_update_from_another_process_moves_the_charge(env, t1) -> None:  # type: ignore[no-untyped-def]
    """vfio_change_dma_owner(): the new process is charged under its own RLIMIT_MEMLOCK
    and CAP_IPC_LOCK (ENOMEM leaves the mapping invalidated), then the old one is
    credited."""
    assert dma_map(env, t1, 0, MB) == 0
    assert dma_unmap(env, t1, 0, MB, V.VFIO_DMA_UNMAP_FLAG_VADDR) == (0, MB)
    heir = FakeCaller(caps=frozenset())
    heir.mm.size = 4 * MB
    heir.mm.__attrs_post_init__()
    heir.mm.tgid, heir.mm.memlock = 999, MB // 2
    assert dma_map(env, t1, 0, MB, flags=VADDR, caller=heir) == -errno.ENOMEM
    assert (env.caller.mm.locked_vm, heir.mm.locked_vm) == (MB, 0)
    heir.mm.memlock = MB
    assert dma_map(env, t1, 0, MB, flags=VADDR, caller=heir) == 0
    assert (env.caller.mm.locked_vm, heir.mm.locked_vm) == (0, MB)
    assert env.machine.mappings("0000:00:04.0")[0].owner is heir.mm


def test_container_release_unmaps_everything(env, t1) -> None:  # type: ignore[no-untyped-def]
    assert dma_map(env, t1, 0, MB) == 0
    env.core.groups[3].opened_file.release()
    assert env.machine.mappings("0000:00:04.0") == []
    assert env.caller.mm.locked_vm == 0


def test_mappings_belong_to_the_mapping_process(env, t1) -> None:  # type: ignore[no-untyped-def]
    other = FakeCaller()
    other.mm.tgid = 999
    assert dma_map(env, t1, 0, MB) == 0
    assert dma_map(env, t1, 4 * MB, MB, caller=other) == 0
    owners = {m.iova: m.owner for m in env.machine.mappings("0000:00:04.0")}
    assert owners[0] is env.caller.mm and owners[4 * MB] is other.mm


def test_dirty_tracking_bitmaps(env, t1) -> None:  # type: ignore[no-untyped-def]
    c = env.caller

    def dirty(flags: int, extra: bytes = b"", argsz: int = 8) -> int:
        try:
            return t1.ioctl(
                c,
                V.VFIO_IOMMU_DIRTY_PAGES,
                c.alloc(struct.pack("<II", argsz, flags) + extra),
            )
        except KernelError as e:
            return -e.errno

    F = (
        V.VFIO_IOMMU_DIRTY_PAGES_FLAG_START,
        V.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP,
        V.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
    )
    assert dirty(F[0] | F[1]) == -errno.EINVAL
    assert dma_map(env, t1, 0, 8 * 4096) == 0
    bm = c.alloc(bytes(8))
    get = struct.pack("<QQQQQ", 0, 64 * 4096, 4096, 8, bm)
    assert dirty(F[2], get, argsz=48) == -errno.EINVAL  # tracking off
    assert dirty(F[0]) == 0
    assert dirty(F[0]) == 0  # idempotent
    assert dirty(F[2], get, argsz=47) == -errno.EINVAL
    assert (
        dirty(F[2], struct.pack("<QQQQQ", 0, 64 * 4096, 8192, 8, bm), argsz=48)
        == -errno.EINVAL
    )
    assert dirty(F[2], get, argsz=48) == 0
    assert c.mm.read(bm, 8) == (0xFF).to_bytes(8, "little")  # the 8 mapped pages
    # UNMAP with GET_DIRTY_BITMAP reports, then unmaps
    bm2 = c.alloc(bytes(8))
    arg = c.alloc(
        V.VfioIommuType1DmaUnmap(
            48, V.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, 0, 8 * 4096
        ).pack()
        + struct.pack("<QQQ", 4096, 8, bm2)
    )
    assert t1.ioctl(c, V.VFIO_IOMMU_UNMAP_DMA, arg) == 0
    assert c.mm.read(bm2, 8) == (0xFF).to_bytes(8, "little")
    assert env.machine.mappings("0000:00:04.0") == []
    assert dirty(F[1]) == 0
