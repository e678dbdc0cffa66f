"""vfio-pci device ioctls and region access, with the kernel's errnos."""

from __future__ import annotations

import errno
import struct

import pytest

from vfiofs.abi import vfio as V
from vfiofs.config import default_topology
from vfiofs.errors import KernelError
from vfiofs.machine import Machine
from vfiofs.uaccess import FakeCaller, FakeEventFd, ForeignFile, OurFile

E, T, M, U = (
    V.VFIO_IRQ_SET_DATA_EVENTFD,
    V.VFIO_IRQ_SET_ACTION_TRIGGER,
    V.VFIO_IRQ_SET_ACTION_MASK,
    V.VFIO_IRQ_SET_ACTION_UNMASK,
)
NONE, BOOL = V.VFIO_IRQ_SET_DATA_NONE, V.VFIO_IRQ_SET_DATA_BOOL


@pytest.fixture
def dev():  # type: ignore[no-untyped-def]
    m = Machine(default_topology())
    c = FakeCaller()
    cont = m.core.open_container(c, 0)
    gf = m.core.groups[0].open(c, 0)
    c.fds[3] = OurFile(cont)
    gf.ioctl(c, V.VFIO_GROUP_SET_CONTAINER, c.alloc(struct.pack("<i", 3)))
    cont.ioctl(c, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
    df = gf.get_device_fd(c, "0000:00:04.0")
    return m, c, df, gf


def set_irqs(
    c: FakeCaller,
    df,
    flags: int,
    index: int,
    start: int,
    count: int,
    data: bytes = b"",
    argsz: int | None = None,
) -> int:  # type: ignore[no-untyped-def]
    st = V.VfioIrqSet(
        argsz if argsz is not None else 20 + len(data), flags, index, start, count
    )
    try:
        return df.ioctl(c, V.VFIO_DEVICE_SET_IRQS, c.alloc(st.pack() + data))
    except KernelError as e:
        return -e.errno


def eventfds(c: FakeCaller, n: int, base: int = 10) -> tuple[bytes, list[FakeEventFd]]:
    evs = []
    for i in range(n):
        ev = FakeEventFd()
        c.fds[base + i] = ForeignFile("eventfd", ev)
        evs.append(ev)
    return struct.pack(f"<{n}i", *range(base, base + n)), evs


def test_set_irqs_validation_errnos(dev) -> None:  # type: ignore[no-untyped-def]
    _, c, df, _ = dev
    assert set_irqs(c, df, NONE | T, 0, 0, 1, argsz=19) == -errno.EINVAL
    assert set_irqs(c, df, NONE | T, 5, 0, 1) == -errno.EINVAL  # index
    assert set_irqs(c, df, NONE | T | 0x40, 0, 0, 1) == -errno.EINVAL  # unknown flag
    assert (
        set_irqs(c, df, NONE | T, 2, 3, 2) == -errno.EINVAL
    )  # past the 4 MSI-X vectors
    assert (
        set_irqs(c, df, NONE | BOOL | T, 0, 0, 1, b"\1") == -errno.EINVAL
    )  # two DATA bits
    assert set_irqs(c, df, NONE | T | M, 0, 0, 1) == -errno.ENOTTY  # two ACTION bits
    assert (
        set_irqs(c, df, E | T, 2, 0, 2, b"\0" * 4) == -errno.EINVAL
    )  # data shorter than count
    assert (
        set_irqs(c, df, E | M, 2, 0, 1, b"\0" * 4) == -errno.ENOTTY
    )  # MSI-X cannot mask
    c.fds[20] = ForeignFile("other")
    assert (
        set_irqs(c, df, E | T, 2, 0, 1, struct.pack("<i", 20)) == -errno.EINVAL
    )  # not an eventfd
    assert set_irqs(c, df, E | T, 2, 0, 1, struct.pack("<i", 99)) == -errno.EBADF


def test_msix_delivery_to_the_right_eventfd_only(dev) -> None:  # type: ignore[no-untyped-def]
    m, c, df, _ = dev
    data, evs = eventfds(c, 3)
    assert set_irqs(c, df, E | T, 2, 0, 3, data) == 0
    pdev = m.devices["0000:00:04.0"]
    pdev.raise_irq(1)
    pdev.raise_irq(1)
    assert [e.count for e in evs] == [0, 2, 0]
    assert (
        set_irqs(c, df, BOOL | T, 2, 2, 1, b"\1") == 0
    )  # loopback trigger of vector 2
    assert [e.count for e in evs] == [0, 2, 1]
    data2, _ = eventfds(c, 1, base=30)
    assert (
        set_irqs(c, df, E | T, 1, 0, 1, data2) == -errno.EINVAL
    )  # MSI while MSI-X is on
    assert set_irqs(c, df, NONE | T, 2, 0, 0) == 0  # count 0: disable
    assert all(e.closed for e in evs)
    pdev.raise_irq(1)
    assert [e.count for e in evs] == [0, 2, 1]


def test_intx_automask_and_unmask(dev) -> None:  # type: ignore[no-untyped-def]
    m, c, df, _ = dev
    data, (ev,) = eventfds(c, 1)
    assert set_irqs(c, df, E | T, 0, 0, 1, data) == 0
    pdev = m.devices["0000:00:04.0"]
    pdev.raise_irq(0)
    pdev.raise_irq(0)  # automasked after the first: pending
    assert ev.count == 1
    assert set_irqs(c, df, NONE | U, 0, 0, 1) == 0  # unmask delivers the pending one
    assert ev.count == 2
    assert set_irqs(c, df, NONE | M, 0, 0, 1) == 0
    assert set_irqs(c, df, BOOL | U, 0, 0, 1, b"\0") == 0  # bool 0: no-op
    pdev.raise_irq(0)
    assert ev.count == 2
    assert set_irqs(c, df, E | U, 0, 0, 1, data) == -errno.EINVAL
    assert set_irqs(c, df, NONE | M, 0, 0, 2) == -errno.EINVAL  # INTx has one vector


def test_region_info_and_access(dev) -> None:  # type: ignore[no-untyped-def]
    _, c, df, _ = dev

    def info(index: int, argsz: int = 32) -> V.VfioRegionInfo:
        arg = c.alloc(V.VfioRegionInfo(argsz, 0, index, 0, 0, 0).pack())
        df.ioctl(c, V.VFIO_DEVICE_GET_REGION_INFO, arg)
        return V.VfioRegionInfo.unpack_from(c.mm.read(arg, 32))

    assert (info(0).size, info(0).offset, info(0).flags) == (4096, 0, 3)
    assert (info(7).size, info(7).offset) == (4096, 7 << 40)
    assert info(6).size == 0
    with pytest.raises(KernelError) as e:
        info(9)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(KernelError) as e:
        info(0, argsz=31)
    assert e.value.errno == errno.EINVAL
    assert df.read(c, 7 << 40, 4) == bytes.fromhex("361b0500")
    assert df.read(c, 7 << 40, 0) == b""
    for off, data in ((9 << 40, b"x"), (6 << 40, b"x"), ((7 << 40) + 4096, b"x")):
        with pytest.raises(KernelError) as e:
            df.write(c, off, data)
        assert e.value.errno == errno.EINVAL


def test_get_info_and_irq_info(dev) -> None:  # type: ignore[no-untyped-def]
    _, c, df, _ = dev
    arg = c.alloc(V.VfioDeviceInfo(24).pack())
    df.ioctl(c, V.VFIO_DEVICE_GET_INFO, arg)
    i = V.VfioDeviceInfo.unpack_from(c.mm.read(arg, 24))
    assert (i.flags, i.num_regions, i.num_irqs) == (
        V.VFIO_DEVICE_FLAGS_PCI | V.VFIO_DEVICE_FLAGS_RESET,
        9,
        5,
    )
    counts = []
    for index in range(5):
        arg = c.alloc(V.VfioIrqInfo(16, 0, index, 0).pack())
        df.ioctl(c, V.VFIO_DEVICE_GET_IRQ_INFO, arg)
        counts.append(V.VfioIrqInfo.unpack_from(c.mm.read(arg, 16)).count)
    assert counts == [1, 1, 4, 1, 1]
    with pytest.raises(KernelError) as e:
        df.ioctl(
            c, V.VFIO_DEVICE_GET_IRQ_INFO, c.alloc(V.VfioIrqInfo(16, 0, 5, 0).pack())
        )
    assert e.value.errno == errno.EINVAL


def test_reset_restores_device_state(dev) -> None:  # type: ignore[no-untyped-def]
    _m, c, df, _ = dev
    df.write(c, (7 << 40) + 4, struct.pack("<H", 0x6))
    df.write(c, 0x0, struct.pack("<I", 0x1234))  # memcpy SRC register
    assert df.ioctl(c, V.VFIO_DEVICE_RESET, 0) == 0
    assert df.read(c, (7 << 40) + 4, 2) == b"\0\0"
    assert df.read(c, 0, 4) == bytes(4)


def test_hot_reset_info_enospc_and_ownership(dev) -> None:  # type: ignore[no-untyped-def]
    _m, c, df, gf = dev
    arg = c.alloc(V.VfioPciHotResetInfo(12, 0, 0).pack() + bytes(8))
    with pytest.raises(KernelError) as e:
        df.ioctl(c, V.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, arg)
    assert e.value.errno == errno.ENOSPC
    assert V.VfioPciHotResetInfo.unpack_from(c.mm.read(arg, 12)).count == 1
    arg = c.alloc(V.VfioPciHotResetInfo(20, 0, 0).pack() + bytes(8))
    assert df.ioctl(c, V.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, arg) == 0
    dep = V.VfioPciDependentDevice.unpack_from(c.mm.read(arg + 12, 8))
    assert (dep.group_id, dep.segment, dep.bus, dep.devfn) == (0, 0, 0, 4 << 3)

    def hot_reset(fds: list[int], flags: int = 0) -> int:
        data = struct.pack(f"<{len(fds)}i", *fds)
        try:
            return df.ioctl(
                c,
                V.VFIO_DEVICE_PCI_HOT_RESET,
                c.alloc(
                    V.VfioPciHotReset(12 + len(data), flags, len(fds)).pack() + data
                ),
            )
        except KernelError as e:
            return -e.errno

    c.fds[40] = OurFile(gf)
    assert hot_reset([40], flags=1) == -errno.EINVAL
    assert hot_reset([]) == -errno.EINVAL  # the group is not covered
    assert hot_reset([41]) == -errno.EBADF
    assert hot_reset([40]) == 0
