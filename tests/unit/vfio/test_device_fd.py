"""The device fd's own ioctls (vfio_main.c vfio_device_fops_unl_ioctl): BIND_IOMMUFD
first, then nothing without access, then the cdev-only ATTACH/DETACH_IOMMUFD_PT, then
VFIO_DEVICE_FEATURE, then the bus driver. Each through its table, in that order."""

from __future__ import annotations

import errno

import pytest

from tests.unit.helpers import legacy_group
from vfiofs.abi import vfio as V
from vfiofs.config import default_topology
from vfiofs.errors import KernelError
from vfiofs.iommufd.main import iommufd_fops_open
from vfiofs.machine import Machine
from vfiofs.uaccess import Caller, FakeCaller, OurFile
from vfiofs.vfio import vfio_main
from vfiofs.vfio.vfio import VfioDeviceFile

GET, SET, PROBE = (
    V.VFIO_DEVICE_FEATURE_GET,
    V.VFIO_DEVICE_FEATURE_SET,
    V.VFIO_DEVICE_FEATURE_PROBE,
)


@pytest.fixture
def c() -> FakeCaller:
    return FakeCaller()


@pytest.fixture
def m() -> Machine:
    return Machine(default_topology())


def group_fd(m: Machine, c: FakeCaller) -> VfioDeviceFile:
    gf = legacy_group(m, c, m.core.open_container(c, 0))
    return gf.get_device_fd(c, "0000:00:04.0")


def cdev_fd(m: Machine, c: FakeCaller) -> VfioDeviceFile:
    df = m.tree.root.walk("dev/vfio/devices/vfio0").opener(c, 0)  # type: ignore[attr-defined]
    assert isinstance(df, VfioDeviceFile)
    return df


def ioctl(df: VfioDeviceFile, c: FakeCaller, cmd: int, raw: bytes) -> int:
    try:
        return df.ioctl(c, cmd, c.alloc(raw))
    except KernelError as e:
        return -e.errno


def feature(argsz: int, flags: int) -> bytes:
    return V.VfioDeviceFeature(argsz, flags).pack()


def test_feature_checks_in_kernel_order(m: Machine, c: FakeCaller) -> None:
    df = group_fd(m, c)
    F = V.VFIO_DEVICE_FEATURE
    assert ioctl(df, c, F, feature(7, GET | 1)) == -errno.EINVAL  # argsz < minsz
    assert ioctl(df, c, F, feature(8, 1 << 19 | 1)) == -errno.EINVAL  # unknown flag
    assert ioctl(df, c, F, feature(8, GET | SET | 1)) == -errno.EINVAL
    # no feature is supported: GET, SET, and a PROBE of both, all ENOTTY
    for flags in (GET | 1, SET | 2, GET | SET | PROBE | 6):
        assert ioctl(df, c, F, feature(8, flags)) == -errno.ENOTTY
    with pytest.raises(KernelError) as e:
        df.ioctl(c, F, 8)  # unreadable argument
    assert e.value.errno == errno.EFAULT


def test_feature_table_entry_gets_its_data(
    m: Machine, c: FakeCaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adding a feature is one entry in vfio_main.FEATURES; its handler gets the
    flags and ``arg->data`` with ``argsz - minsz`` bytes."""
    seen: list[tuple[int, bytes]] = []

    def handler(
        df: VfioDeviceFile, caller: Caller, flags: int, data: int, n: int
    ) -> int:
        seen.append((flags, caller.copy_from_user(data, n)))
        return 7

    entry = vfio_main.DeviceFeature(42, "VFIO_DEVICE_FEATURE_TEST", handler)
    monkeypatch.setitem(vfio_main.FEATURES, 42, entry)
    df = group_fd(m, c)
    raw = feature(12, GET | 42) + b"abcd"
    assert ioctl(df, c, V.VFIO_DEVICE_FEATURE, raw) == 7
    assert seen == [(GET | 42, b"abcd")]


def test_bind_on_a_group_fd_checks_the_struct_then_says_einval(
    m: Machine, c: FakeCaller
) -> None:
    df = group_fd(m, c)
    B = V.VFIO_DEVICE_BIND_IOMMUFD
    bind = V.VfioDeviceBindIommufd(24, 0, 7, 0, 0).pack()
    short = V.VfioDeviceBindIommufd(15, 0, 7, 0, 0).pack()
    assert ioctl(df, c, B, short) == -errno.EINVAL  # argsz < offsetofend(out_devid)
    tail = V.VfioDeviceBindIommufd(28, 0, 7, 0, 0).pack() + b"\1\0\0\0"
    assert ioctl(df, c, B, tail) == -errno.E2BIG  # copy_struct_from_user first
    assert ioctl(df, c, B, bind) == -errno.EINVAL  # only cdev fds bind


def test_cdev_only_ioctls_go_to_the_driver_on_a_group_fd(
    m: Machine, c: FakeCaller
) -> None:
    df = group_fd(m, c)
    attach = V.VfioDeviceAttachIommufdPt(16, 0, 1, 0).pack()
    assert ioctl(df, c, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, attach) == -errno.ENOTTY
    detach = V.VfioDeviceDetachIommufdPt(12, 0, 0).pack()
    assert ioctl(df, c, V.VFIO_DEVICE_DETACH_IOMMUFD_PT, detach) == -errno.ENOTTY


def test_unbound_cdev_fd_answers_einval_to_all_but_bind(
    m: Machine, c: FakeCaller
) -> None:
    df = cdev_fd(m, c)
    assert ioctl(df, c, V.VFIO_DEVICE_FEATURE, feature(8, GET | 1)) == -errno.EINVAL
    attach = V.VfioDeviceAttachIommufdPt(16, 0, 1, 0).pack()
    assert ioctl(df, c, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, attach) == -errno.EINVAL
    assert ioctl(df, c, V.VFIO_DEVICE_GET_INFO, bytes(24)) == -errno.EINVAL
    bind = V.VfioDeviceBindIommufd(15, 0, 7, 0, 0).pack()
    assert ioctl(df, c, V.VFIO_DEVICE_BIND_IOMMUFD, bind) == -errno.EINVAL  # argsz


def test_attach_pt_checks_before_touching_the_device(m: Machine, c: FakeCaller) -> None:
    df = cdev_fd(m, c)
    c.fds[7] = OurFile(iommufd_fops_open())
    bind = V.VfioDeviceBindIommufd(24, 0, 7, 0, 0).pack()
    assert ioctl(df, c, V.VFIO_DEVICE_BIND_IOMMUFD, bind) == 0
    A = V.VFIO_DEVICE_ATTACH_IOMMUFD_PT
    assert ioctl(df, c, A, V.VfioDeviceAttachIommufdPt(11, 0, 1, 0).pack()) == (
        -errno.EINVAL
    )
    assert ioctl(df, c, A, V.VfioDeviceAttachIommufdPt(16, 2, 1, 0).pack()) == (
        -errno.EINVAL
    )
    D = V.VFIO_DEVICE_DETACH_IOMMUFD_PT
    assert ioctl(df, c, D, V.VfioDeviceDetachIommufdPt(7, 0, 0).pack()) == -errno.EINVAL
    assert ioctl(df, c, D, V.VfioDeviceDetachIommufdPt(12, 1, 0).pack()) == (
        -errno.EOPNOTSUPP
    )


def test_closed_or_removed_device_fd_is_enodev(m: Machine, c: FakeCaller) -> None:
    df = group_fd(m, c)
    m.remove_device("0000:00:04.0")
    assert ioctl(df, c, V.VFIO_DEVICE_FEATURE, feature(8, GET | 1)) == -errno.ENODEV
    df.release()
    assert ioctl(df, c, V.VFIO_DEVICE_GET_INFO, bytes(24)) == -errno.ENODEV


def test_ioctl_names_for_trace(m: Machine, c: FakeCaller) -> None:
    df = group_fd(m, c)
    assert df.ioctl_name(V.VFIO_DEVICE_BIND_IOMMUFD) == "VFIO_DEVICE_BIND_IOMMUFD"
    assert df.ioctl_name(V.VFIO_DEVICE_DETACH_IOMMUFD_PT) == (
        "VFIO_DEVICE_DETACH_IOMMUFD_PT"
    )
    assert df.ioctl_name(V.VFIO_DEVICE_FEATURE) == "VFIO_DEVICE_FEATURE"
    assert df.ioctl_name(V.VFIO_DEVICE_GET_INFO) == "VFIO_DEVICE_GET_INFO"
    assert df.ioctl_name(0x3BFE) is None
