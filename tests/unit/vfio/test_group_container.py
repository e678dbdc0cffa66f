"""Container and group ioctls: every check in the kernel's order, with its errno."""

from __future__ import annotations

import errno
import struct

import pytest

from vfiofs.abi import vfio as V
from vfiofs.errors import KernelError
from vfiofs.uaccess import FakeCaller, ForeignFile


def err(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(KernelError) as e:
        fn(*args)
    return e.value.errno


def status(env, gf) -> int:  # type: ignore[no-untyped-def]
    c = env.caller
    addr = c.alloc(V.VfioGroupStatus(argsz=8).pack())
    assert gf.ioctl(c, V.VFIO_GROUP_GET_STATUS, addr) == 0
    return V.VfioGroupStatus.unpack_from(c.mm.read(addr, 8)).flags


def test_container_api_version_and_extensions_without_backend(env) -> None:  # type: ignore[no-untyped-def]
    c = env.container()
    assert c.ioctl(env.caller, V.VFIO_GET_API_VERSION, 0) == 0
    for ext, want in (
        (V.VFIO_TYPE1_IOMMU, 1),
        (V.VFIO_TYPE1v2_IOMMU, 1),
        (V.VFIO_UNMAP_ALL, 1),
        (V.VFIO_NOIOMMU_IOMMU, 1),
        (V.VFIO_DMA_CC_IOMMU, 0),
        (V.VFIO_UPDATE_VADDR, 0),
        (V.VFIO_TYPE1_NESTING_IOMMU, 0),
        (12345, 0),
    ):
        assert c.ioctl(env.caller, V.VFIO_CHECK_EXTENSION, ext) == want, ext


def test_container_set_iommu_rules(env) -> None:  # type: ignore[no-untyped-def]
    c = env.container()
    assert (
        err(c.ioctl, env.caller, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU) == errno.EINVAL
    )  # no group
    assert (
        err(c.ioctl, env.caller, V.VFIO_IOMMU_GET_INFO, 0) == errno.EINVAL
    )  # no backend
    gf = env.group(3)
    assert env.set_container(gf, c) == 0
    assert err(c.ioctl, env.caller, V.VFIO_SET_IOMMU, 99) == errno.ENODEV
    assert (
        err(c.ioctl, env.caller, V.VFIO_SET_IOMMU, V.VFIO_NOIOMMU_IOMMU) == errno.ENODEV
    )
    assert c.ioctl(env.caller, V.VFIO_SET_IOMMU, V.VFIO_TYPE1_IOMMU) == 0
    assert (
        err(c.ioctl, env.caller, V.VFIO_SET_IOMMU, V.VFIO_TYPE1_IOMMU) == errno.EINVAL
    )  # once only
    assert c.ioctl(env.caller, V.VFIO_CHECK_EXTENSION, V.VFIO_DMA_CC_IOMMU) == 1
    assert (
        err(c.ioctl, env.caller, 0x3BFE, 0) == errno.ENOTTY
    )  # unknown, to the backend


def test_group_open_exclusive_and_status(env) -> None:  # type: ignore[no-untyped-def]
    gf = env.group(3)
    assert err(env.group, 3) == errno.EBUSY
    assert status(env, gf) == V.VFIO_GROUP_FLAGS_VIABLE
    c = env.container()
    env.set_container(gf, c)
    assert (
        status(env, gf) == V.VFIO_GROUP_FLAGS_VIABLE | V.VFIO_GROUP_FLAGS_CONTAINER_SET
    )
    gf.release()
    assert env.group(3) is not None  # free again; release detached it
    assert c.groups == []


def test_group_status_argsz_and_bad_pointer(env) -> None:  # type: ignore[no-untyped-def]
    gf = env.group(3)
    addr = env.caller.alloc(V.VfioGroupStatus(argsz=7).pack())
    assert err(gf.ioctl, env.caller, V.VFIO_GROUP_GET_STATUS, addr) == errno.EINVAL
    assert err(gf.ioctl, env.caller, V.VFIO_GROUP_GET_STATUS, 8) == errno.EFAULT
    assert err(gf.ioctl, env.caller, 0x3B99, 0) == errno.ENOTTY


def test_group_non_viable_when_a_device_has_a_host_driver(env) -> None:  # type: ignore[no-untyped-def]
    gf = env.group(4)  # 0000:00:05.1 is bound to igb
    assert status(env, gf) == 0
    assert err(env.set_container, gf, env.container()) == errno.EPERM


def test_set_container_checks_in_order(env) -> None:  # type: ignore[no-untyped-def]
    gf = env.group(3)
    c = env.caller
    assert err(gf.ioctl, c, V.VFIO_GROUP_SET_CONTAINER, 1) == errno.EFAULT
    assert (
        err(gf.ioctl, c, V.VFIO_GROUP_SET_CONTAINER, c.alloc(struct.pack("<i", 77)))
        == errno.EBADF
    )
    assert (
        err(gf.ioctl, c, V.VFIO_GROUP_SET_CONTAINER, c.alloc(struct.pack("<i", -1)))
        == errno.EBADF
    )
    c.fds[40] = ForeignFile("other")
    assert (
        err(gf.ioctl, c, V.VFIO_GROUP_SET_CONTAINER, c.alloc(struct.pack("<i", 40)))
        == errno.EBADFD
    )
    assert env.set_container(gf, env.container()) == 0
    # already set: EINVAL, even before looking at what the new fd is
    assert (
        err(gf.ioctl, c, V.VFIO_GROUP_SET_CONTAINER, c.alloc(struct.pack("<i", 40)))
        == errno.EINVAL
    )


def test_unset_container(env) -> None:  # type: ignore[no-untyped-def]
    gf = env.group(3)
    assert err(gf.ioctl, env.caller, V.VFIO_GROUP_UNSET_CONTAINER, 0) == errno.EINVAL
    cont = env.container()
    env.set_container(gf, cont)
    cont.ioctl(env.caller, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
    df = gf.get_device_fd(env.caller, "0000:00:04.0")
    assert err(gf.ioctl, env.caller, V.VFIO_GROUP_UNSET_CONTAINER, 0) == errno.EBUSY
    df.release()
    assert gf.ioctl(env.caller, V.VFIO_GROUP_UNSET_CONTAINER, 0) == 0
    assert cont.iommu_driver is None  # last group out releases the backend


def test_get_device_fd_checks(env) -> None:  # type: ignore[no-untyped-def]
    gf = env.group(3)
    c = env.caller
    assert err(gf.get_device_fd, c, "0000:00:09.0") == errno.ENODEV
    assert err(gf.get_device_fd, c, "0000:00:04.0") == errno.EINVAL  # no container
    cont = env.container()
    env.set_container(gf, cont)
    assert err(gf.get_device_fd, c, "0000:00:04.0") == errno.EINVAL  # no IOMMU yet
    cont.ioctl(c, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
    assert err(gf.get_device_fd, c, "0000:00:04.0 bogus=1") == errno.EINVAL
    df1 = gf.get_device_fd(c, "0000:00:04.0")
    df2 = gf.get_device_fd(c, "0000:00:04.0")  # opened twice: one open_device
    assert df1.device.open_count == 2
    # the ioctl itself cannot create the fd: EOPNOTSUPP after the same checks
    name = c.alloc(b"0000:00:04.0\0")
    assert err(gf.ioctl, c, V.VFIO_GROUP_GET_DEVICE_FD, name) == errno.EOPNOTSUPP
    assert (
        err(gf.ioctl, c, V.VFIO_GROUP_GET_DEVICE_FD, c.alloc(b"x" * 5000))
        == errno.EINVAL
    )
    # the group file lives until its device fds close
    gf.release()
    assert cont.groups and df2.ioctl(c, V.VFIO_DEVICE_RESET, 0) == 0
    df1.release()
    df2.release()
    assert cont.groups == []


def test_noiommu_rules(env) -> None:  # type: ignore[no-untyped-def]
    unpriv = FakeCaller(caps=frozenset())
    gid = env.machine.devices["0000:00:06.0"].iommu_group.id
    assert env.core.groups[gid].name == f"noiommu-{gid}"
    assert err(env.group, gid, unpriv) == errno.EPERM
    gf = env.group(gid)
    cont = env.container()
    env.set_container(gf, cont)
    assert (
        err(cont.ioctl, env.caller, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
        == errno.ENODEV
    )
    assert cont.ioctl(env.caller, V.VFIO_CHECK_EXTENSION, V.VFIO_TYPE1_IOMMU) == 0
    assert cont.ioctl(env.caller, V.VFIO_SET_IOMMU, V.VFIO_NOIOMMU_IOMMU) == 0
    assert err(cont.ioctl, env.caller, V.VFIO_IOMMU_MAP_DMA, 0) == errno.ENOTTY
    # a real group cannot join a noiommu container
    g3 = env.group(3)
    assert err(env.set_container, g3, cont) == errno.EPERM


def test_two_processes_share_nothing(env) -> None:  # type: ignore[no-untyped-def]
    """Process b, with a container of its own, gets nothing of what process a set up.
    Every fd b passes resolves to a real handle of b's, so each answer is the core's."""
    a, b = env.caller, FakeCaller()
    b.mm.tgid = a.mm.tgid + 1
    ca, cb = env.container(a), env.container(b)
    ga = env.group(3, a)
    assert env.set_container(ga, ca, a) == 0
    assert ca.ioctl(a, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU) == 0
    # the group is a's: b cannot open it
    assert err(env.group, 3, b) == errno.EBUSY
    # even handed a's group file, b cannot move it into its container (it has one)
    assert err(env.set_container, ga, cb, b) == errno.EINVAL
    # b's container is still empty: no IOMMU to set
    assert err(cb.ioctl, b, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU) == errno.EINVAL
    assert cb.groups == [] and ca.groups == [ga.group]
    # a's group still reports a's container
    assert (
        status(env, ga) == V.VFIO_GROUP_FLAGS_VIABLE | V.VFIO_GROUP_FLAGS_CONTAINER_SET
    )
