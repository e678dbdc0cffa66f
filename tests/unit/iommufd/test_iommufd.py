"""iommufd commands: the size convention, every misuse errno, ids, destroy rules, and the
cdev bind/attach rules (no mount: FakeCaller and a machine)."""

from __future__ import annotations

import errno
import struct

import pytest

from vfiofs.abi import iommufd as I, vfio as V
from vfiofs.config import default_topology
from vfiofs.errors import KernelError
from vfiofs.iommufd.iommufd_private import IommufdCtx
from vfiofs.iommufd.main import iommufd_fops_open
from vfiofs.machine import Machine
from vfiofs.uaccess import FakeCaller, ForeignFile, OurFile

U64_MAX = (1 << 64) - 1
MB = 1 << 20


@pytest.fixture
def m() -> Machine:
    return Machine(default_topology())


@pytest.fixture
def c() -> FakeCaller:
    caller = FakeCaller()
    caller.mm.size = 16 * MB
    caller.mm.__attrs_post_init__()
    return caller


def call(
    ctx: IommufdCtx, c: FakeCaller, cmd: int, st: object, extra: bytes = b""
) -> tuple[int, bytes]:
    raw = st.pack() + extra  # type: ignore[attr-defined]
    arg = c.alloc(raw)
    try:
        rc = ctx.ioctl(c, cmd, arg)
    except KernelError as e:
        return -e.errno, c.mm.read(arg, len(raw))
    return rc, c.mm.read(arg, len(raw))


def ioas(ctx: IommufdCtx, c: FakeCaller) -> int:
    rc, out = call(ctx, c, I.IOMMU_IOAS_ALLOC, I.IommuIoasAlloc(12, 0, 0))
    assert rc == 0
    return I.IommuIoasAlloc.unpack_from(out).out_ioas_id


def imap(
    ctx: IommufdCtx,
    c: FakeCaller,
    ioas_id: int,
    iova: int,
    length: int,
    flags: int = 7,
    va: int | None = None,
) -> tuple[int, int]:
    st = I.IommuIoasMap(
        40, flags, ioas_id, 0, c.mm.base if va is None else va, length, iova
    )
    rc, out = call(ctx, c, I.IOMMU_IOAS_MAP, st)
    return rc, I.IommuIoasMap.unpack_from(out).iova


def iunmap(
    ctx: IommufdCtx, c: FakeCaller, ioas_id: int, iova: int, length: int
) -> tuple[int, int]:
    rc, out = call(
        ctx, c, I.IOMMU_IOAS_UNMAP, I.IommuIoasUnmap(24, ioas_id, iova, length)
    )
    return rc, I.IommuIoasUnmap.unpack_from(out).length


def test_size_convention_einval_e2big_and_zero_extension(c: FakeCaller) -> None:
    ctx = iommufd_fops_open()
    assert (
        call(ctx, c, I.IOMMU_IOAS_ALLOC, I.IommuIoasAlloc(11, 0, 0))[0] == -errno.EINVAL
    )
    assert (
        call(ctx, c, I.IOMMU_IOAS_ALLOC, I.IommuIoasAlloc(16, 0, 0), b"\0\0\0\1")[0]
        == -errno.E2BIG
    )
    rc, out = call(ctx, c, I.IOMMU_IOAS_ALLOC, I.IommuIoasAlloc(16, 0, 0), bytes(4))
    assert rc == 0
    assert out[12:] == bytes(4)  # nothing written past the kernel's struct
    assert (
        call(ctx, c, I.IOMMU_IOAS_ALLOC, I.IommuIoasAlloc(12, 1, 0))[0]
        == -errno.EOPNOTSUPP
    )
    with pytest.raises(KernelError) as e:
        ctx.ioctl(c, I.IOMMU_IOAS_ALLOC, 8)
    assert e.value.errno == errno.EFAULT
    with pytest.raises(KernelError) as e:
        ctx.ioctl(c, 0x3BFE, 0)
    assert e.value.errno == errno.ENOTTY


def test_ids_lowest_free_and_reused(c: FakeCaller) -> None:
    ctx = iommufd_fops_open()
    assert [ioas(ctx, c) for _ in range(3)] == [1, 2, 3]
    assert call(ctx, c, I.IOMMU_DESTROY, I.IommuDestroy(8, 2))[0] == 0
    assert call(ctx, c, I.IOMMU_DESTROY, I.IommuDestroy(8, 2))[0] == -errno.ENOENT
    assert ioas(ctx, c) == 2


def test_iova_ranges_emsgsize_dance(c: FakeCaller) -> None:
    ctx = iommufd_fops_open()
    i = ioas(ctx, c)
    rc, out = call(
        ctx, c, I.IOMMU_IOAS_IOVA_RANGES, I.IommuIoasIovaRanges(32, i, 0, 0, 0, 0)
    )
    assert rc == -errno.EMSGSIZE
    assert I.IommuIoasIovaRanges.unpack_from(out).num_iovas == 1
    buf = c.alloc(bytes(16))
    rc, out = call(
        ctx, c, I.IOMMU_IOAS_IOVA_RANGES, I.IommuIoasIovaRanges(32, i, 1, 0, buf, 0)
    )
    assert rc == 0
    assert struct.unpack("<QQ", c.mm.read(buf, 16)) == (0, U64_MAX)
    assert (
        call(
            ctx, c, I.IOMMU_IOAS_IOVA_RANGES, I.IommuIoasIovaRanges(32, 99, 0, 0, 0, 0)
        )[0]
        == -errno.ENOENT
    )
    assert (
        call(
            ctx, c, I.IOMMU_IOAS_IOVA_RANGES, I.IommuIoasIovaRanges(32, i, 0, 1, 0, 0)
        )[0]
        == -errno.EOPNOTSUPP
    )


def test_map_checks(c: FakeCaller) -> None:
    ctx = iommufd_fops_open()
    i = ioas(ctx, c)
    fixed = (
        I.IOMMU_IOAS_MAP_FIXED_IOVA
        | I.IOMMU_IOAS_MAP_READABLE
        | I.IOMMU_IOAS_MAP_WRITEABLE
    )
    assert imap(ctx, c, i, MB, MB, flags=fixed | 8)[0] == -errno.EOPNOTSUPP
    assert imap(ctx, c, i, U64_MAX, MB, flags=fixed)[0] == -errno.EOVERFLOW
    assert (
        imap(ctx, c, i, MB, MB, flags=I.IOMMU_IOAS_MAP_FIXED_IOVA)[0] == -errno.EINVAL
    )
    assert imap(ctx, c, 77, MB, MB, flags=fixed)[0] == -errno.ENOENT
    assert imap(ctx, c, i, MB, 0, flags=fixed)[0] == -errno.EINVAL
    assert imap(ctx, c, i, U64_MAX - 4095, 2 * 4096, flags=fixed)[0] == -errno.EOVERFLOW
    assert imap(ctx, c, i, MB, MB, flags=fixed, va=0x40000000)[0] == -errno.EFAULT
    assert imap(ctx, c, i, MB, MB, flags=fixed) == (0, MB)
    assert imap(ctx, c, i, MB + 4096, 4096, flags=fixed)[0] == -errno.EEXIST
    rc, iova = imap(ctx, c, i, 0, MB, flags=6)  # the kernel picks: never 0, aligned
    assert rc == 0
    assert iova
    assert iova % 0x10000 == 0  # min(roundup_pow2(length), lowest set bit of user_va)
    assert iova + MB <= MB or iova >= 2 * MB


def test_unmap_rules(c: FakeCaller) -> None:
    ctx = iommufd_fops_open()
    i = ioas(ctx, c)
    fixed = I.IOMMU_IOAS_MAP_FIXED_IOVA | I.IOMMU_IOAS_MAP_READABLE
    assert imap(ctx, c, i, 0, 2 * MB, flags=fixed)[0] == 0
    assert iunmap(ctx, c, i, 0, MB)[0] == -errno.ENOENT  # bisects
    assert iunmap(ctx, c, i, 8 * MB, MB)[0] == -errno.ENOENT  # nothing there
    assert iunmap(ctx, c, i, 0, 0)[0] == -errno.EINVAL
    assert iunmap(ctx, c, i, 4096, U64_MAX)[0] == -errno.EOVERFLOW
    assert iunmap(ctx, c, i, 0, 4 * MB) == (0, 2 * MB)
    assert iunmap(ctx, c, i, 0, U64_MAX) == (0, 0)  # unmap all of nothing: success


def test_allow_iovas_and_copy(c: FakeCaller) -> None:
    ctx = iommufd_fops_open()
    a, b = ioas(ctx, c), ioas(ctx, c)
    bad = c.alloc(struct.pack("<QQ", 5 * MB, 4 * MB))
    assert (
        call(ctx, c, I.IOMMU_IOAS_ALLOW_IOVAS, I.IommuIoasAllowIovas(24, b, 1, 0, bad))[
            0
        ]
        == -errno.EINVAL
    )
    ranges = c.alloc(struct.pack("<QQ", 64 * MB, 128 * MB - 1))
    assert (
        call(
            ctx, c, I.IOMMU_IOAS_ALLOW_IOVAS, I.IommuIoasAllowIovas(24, b, 1, 0, ranges)
        )[0]
        == 0
    )
    assert imap(ctx, c, a, MB, MB, flags=I.IOMMU_IOAS_MAP_FIXED_IOVA | 4)[0] == 0
    copy = I.IommuIoasCopy(40, 4, b, a, MB, 0, MB)
    rc, out = call(ctx, c, I.IOMMU_IOAS_COPY, copy)
    assert rc == 0
    assert (
        64 * MB <= I.IommuIoasCopy.unpack_from(out).dst_iova < 128 * MB
    )  # picked inside allowed
    assert (
        call(ctx, c, I.IOMMU_IOAS_COPY, I.IommuIoasCopy(40, 4, b, a, 2 * MB, 0, MB))[0]
        == -errno.ENOENT
    )
    assert (
        call(ctx, c, I.IOMMU_IOAS_COPY, I.IommuIoasCopy(40, 0, b, a, MB, 0, MB))[0]
        == -errno.EINVAL
    )


def test_option_and_vfio_ioas(c: FakeCaller) -> None:
    ctx = iommufd_fops_open()
    rc, out = call(
        ctx,
        c,
        I.IOMMU_OPTION,
        I.IommuOption(24, I.IOMMU_OPTION_RLIMIT_MODE, I.IOMMU_OPTION_OP_GET, 0, 0, 9),
    )
    assert (rc, I.IommuOption.unpack_from(out).val64) == (0, 0)
    assert (
        call(ctx, c, I.IOMMU_OPTION, I.IommuOption(24, 7, 1, 0, 0, 0))[0]
        == -errno.EOPNOTSUPP
    )
    assert (
        call(ctx, c, I.IOMMU_OPTION, I.IommuOption(24, 0, 1, 1, 0, 0))[0]
        == -errno.EOPNOTSUPP
    )
    assert (
        call(
            ctx,
            c,
            I.IOMMU_OPTION,
            I.IommuOption(24, I.IOMMU_OPTION_HUGE_PAGES, 1, 0, 5, 0),
        )[0]
        == -errno.ENOENT
    )
    assert (
        call(
            ctx, c, I.IOMMU_VFIO_IOAS, I.IommuVfioIoas(12, 0, I.IOMMU_VFIO_IOAS_GET, 0)
        )[0]
        == -errno.ENODEV
    )
    i = ioas(ctx, c)
    assert (
        call(
            ctx, c, I.IOMMU_VFIO_IOAS, I.IommuVfioIoas(12, i, I.IOMMU_VFIO_IOAS_SET, 0)
        )[0]
        == 0
    )
    rc, out = call(
        ctx, c, I.IOMMU_VFIO_IOAS, I.IommuVfioIoas(12, 0, I.IOMMU_VFIO_IOAS_GET, 0)
    )
    assert I.IommuVfioIoas.unpack_from(out).ioas_id == i
    assert (
        call(ctx, c, I.IOMMU_VFIO_IOAS, I.IommuVfioIoas(12, 0, 9, 0))[0]
        == -errno.EOPNOTSUPP
    )


def bind(
    m: Machine,
    c: FakeCaller,
    node: str,
    ctx: IommufdCtx,
    fd: int = 7,
    argsz: int = 24,
    flags: int = 0,
):  # type: ignore[no-untyped-def]
    df = m.tree.root.walk(node).opener(c, 0)  # type: ignore[attr-defined]
    c.fds[fd] = OurFile(ctx)
    return df, df.ioctl(
        c,
        V.VFIO_DEVICE_BIND_IOMMUFD,
        c.alloc(V.VfioDeviceBindIommufd(argsz, flags, fd, 0, 0).pack()),
    )


def test_cdev_bind_rules(m: Machine, c: FakeCaller) -> None:
    ctx = iommufd_fops_open()
    df = m.tree.root.walk("dev/vfio/devices/vfio0").opener(c, 0)  # type: ignore[attr-defined]

    def b(st: V.VfioDeviceBindIommufd, extra: bytes = b"") -> int:
        try:
            return df.ioctl(c, V.VFIO_DEVICE_BIND_IOMMUFD, c.alloc(st.pack() + extra))
        except KernelError as e:
            return -e.errno

    assert b(V.VfioDeviceBindIommufd(15, 0, 7, 0, 0)) == -errno.EINVAL
    assert b(V.VfioDeviceBindIommufd(28, 0, 7, 0, 0), b"\1\0\0\0") == -errno.E2BIG
    assert b(V.VfioDeviceBindIommufd(24, 0, -1, 0, 0)) == -errno.EINVAL
    assert b(V.VfioDeviceBindIommufd(24, 4, 7, 0, 0)) == -errno.EINVAL
    assert b(V.VfioDeviceBindIommufd(24, 0, 7, 0, 0)) == -errno.EBADF
    c.fds[8] = ForeignFile("other")
    assert b(V.VfioDeviceBindIommufd(24, 0, 8, 0, 0)) == -errno.EBADFD
    with pytest.raises(KernelError) as e:
        df.ioctl(c, V.VFIO_DEVICE_GET_INFO, 0)
    assert e.value.errno == errno.EINVAL  # nothing but BIND before binding
    with pytest.raises(KernelError) as e:
        df.read(c, 0, 4)
    assert e.value.errno == errno.EINVAL
    c.fds[7] = OurFile(ctx)
    arg = c.alloc(V.VfioDeviceBindIommufd(24, 0, 7, 0, 0).pack())
    assert df.ioctl(c, V.VFIO_DEVICE_BIND_IOMMUFD, arg) == 0
    assert V.VfioDeviceBindIommufd.unpack_from(c.mm.read(arg, 24)).out_devid == 1
    assert b(V.VfioDeviceBindIommufd(24, 0, 7, 0, 0)) == -errno.EINVAL  # twice
    # DESTROY of a bound device is EBUSY; closing the fd unbinds
    assert call(ctx, c, I.IOMMU_DESTROY, I.IommuDestroy(8, 1))[0] == -errno.EBUSY
    df.release()
    assert 1 not in ctx.objects


def test_cdev_second_context_cannot_take_the_group(m: Machine, c: FakeCaller) -> None:
    a, b = iommufd_fops_open(), iommufd_fops_open()
    _, rc = bind(m, c, "dev/vfio/devices/vfio1", a, fd=7)
    assert rc == 0
    with pytest.raises(KernelError) as e:  # same group (0000:00:05.x), other iommufd
        bind(m, c, "dev/vfio/devices/vfio2", b, fd=9)
    assert e.value.errno == errno.EBUSY


def test_attach_detach_and_destroy_rules(m: Machine, c: FakeCaller) -> None:
    ctx = iommufd_fops_open()
    df, _ = bind(m, c, "dev/vfio/devices/vfio0", ctx)

    def attach(pt: int, flags: int = 0) -> int:
        arg = c.alloc(V.VfioDeviceAttachIommufdPt(16, flags, pt, 0).pack())
        try:
            df.ioctl(c, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, arg)
        except KernelError as e:
            return -e.errno
        return V.VfioDeviceAttachIommufdPt.unpack_from(c.mm.read(arg, 16)).pt_id

    assert attach(99) == -errno.ENOENT
    assert attach(1) == -errno.EINVAL  # the device itself is neither IOAS nor HWPT
    assert attach(2, flags=1) == -errno.EOPNOTSUPP
    i = ioas(ctx, c)
    hwpt = attach(i)
    assert hwpt == 3
    assert attach(i) == 3  # same IOAS: same auto HWPT
    j = ioas(ctx, c)
    assert (
        attach(j) == 5
    )  # replace: a new auto HWPT on the other IOAS; the old one goes
    assert 3 not in ctx.objects
    assert call(ctx, c, I.IOMMU_DESTROY, I.IommuDestroy(8, j))[0] == -errno.EBUSY
    assert call(ctx, c, I.IOMMU_DESTROY, I.IommuDestroy(8, i))[0] == 0
    df.ioctl(
        c,
        V.VFIO_DEVICE_DETACH_IOMMUFD_PT,
        c.alloc(V.VfioDeviceDetachIommufdPt(12, 0, 0).pack()),
    )
    assert call(ctx, c, I.IOMMU_DESTROY, I.IommuDestroy(8, j))[0] == 0
    assert m.mappings("0000:00:04.0") == []


def test_same_dma_scenario_three_interfaces_same_page_table(c: FakeCaller) -> None:
    """type1, the iommufd compat container and native iommufd map the same thing."""
    results = []
    for mode in ("type1", "compat", "native"):
        m = Machine(default_topology())
        va = c.mm.base + MB
        if mode == "native":
            ctx = iommufd_fops_open()
            df, _ = bind(m, c, "dev/vfio/devices/vfio0", ctx)
            i = ioas(ctx, c)
            df.ioctl(
                c,
                V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                c.alloc(V.VfioDeviceAttachIommufdPt(16, 0, i, 0).pack()),
            )
            assert (
                imap(
                    ctx,
                    c,
                    i,
                    0x200000,
                    MB,
                    flags=I.IOMMU_IOAS_MAP_FIXED_IOVA | 6,
                    va=va,
                )[0]
                == 0
            )
        else:
            cont = (
                m.core.open_container(c, 0) if mode == "type1" else iommufd_fops_open()
            )
            gf = m.core.groups[0].open(c, 0)
            c.fds[5] = OurFile(cont)
            gf.ioctl(c, V.VFIO_GROUP_SET_CONTAINER, c.alloc(struct.pack("<i", 5)))
            cont.ioctl(c, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
            gf.get_device_fd(c, "0000:00:04.0")
            cont.ioctl(
                c,
                V.VFIO_IOMMU_MAP_DMA,
                c.alloc(V.VfioIommuType1DmaMap(32, 3, va, 0x200000, MB).pack()),
            )
        results.append(
            [(x.iova, x.size, x.vaddr, x.prot) for x in m.mappings("0000:00:04.0")]
        )
    assert results[0] == results[1] == results[2] == [(0x200000, MB, c.mm.base + MB, 3)]
