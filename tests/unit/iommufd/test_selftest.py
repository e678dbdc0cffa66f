"""IOMMU_TEST_CMD: every op of iommufd_test.h, its rules and errnos (the mock IOMMU of
drivers/iommu/iommufd/selftest.c)."""

from __future__ import annotations

import errno

import pytest

from vfiofs.abi import iommufd as I, iommufd_test as T
from vfiofs.config import default_topology
from vfiofs.iommufd.selftest import TEST_OPS
from vfiofs.machine import Machine
from vfiofs.uaccess import FakeCaller, OurFile

from .conftest import MB, Env

START = T.MOCK_APERTURE_START


def test_every_op_of_the_header_has_a_handler() -> None:
    ops = {v for k, v in vars(T).items() if k.startswith("IOMMU_TEST_OP_")}
    assert ops == set(TEST_OPS) == set(range(1, 24))


def test_test_cmd_is_enotty_unless_the_topology_enables_it() -> None:
    m = Machine(default_topology())
    c = FakeCaller()
    ctx = m.iommufd_open(c, 0)
    arg = c.alloc(T.IommuTestCmd(72, T.IOMMU_TEST_OP_MOCK_DOMAIN, 1).pack())
    with pytest.raises(Exception) as e:
        ctx.ioctl(c, T.IOMMU_TEST_CMD, arg)
    assert getattr(e.value, "errno", None) == errno.ENOTTY


def test_unknown_op_is_eopnotsupp(env: Env) -> None:
    assert env.test(99)[0] == -errno.EOPNOTSUPP
    assert env.test(0)[0] == -errno.EOPNOTSUPP


def test_add_reserved(env: Env) -> None:
    i = env.ioas()
    assert (
        env.test(T.IOMMU_TEST_OP_ADD_RESERVED, 99, T.AddReserved(0, 4096))[0]
        == -errno.ENOENT
    )
    env.test_ok(T.IOMMU_TEST_OP_ADD_RESERVED, i, T.AddReserved(START, MB))
    # the reserved range is out of the IOVA ranges and of FIXED_IOVA maps
    st = I.IommuIoasMap(40, 7, i, 0, env.buf, 4096, START)
    assert env.call(I.IOMMU_IOAS_MAP, st)[0] == -errno.EINVAL
    env.map(i, START + MB, 4096)
    # a range over a mapping: EADDRINUSE
    rc = env.test(T.IOMMU_TEST_OP_ADD_RESERVED, i, T.AddReserved(START + MB, 4096))[0]
    assert rc == -errno.EADDRINUSE


def test_mock_domain_ids_flags_and_errors(env: Env) -> None:
    i = env.ioas()
    # the selftest object's id comes first, then the device, then its auto HWPT
    assert env.mock_domain(i) == (2, 4, 3)
    stdev, hwpt, idev = env.mock_domain(i)
    assert hwpt == 4  # the same IOAS: the same auto HWPT
    assert env.ctx.objects[stdev].__class__.__name__ == "SelftestObj"
    bad = T.MockDomainFlags(0, 0, 0, 1 << 1)  # bit 1 is unused (was HUGE_IOVA)
    assert env.test(T.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, i, bad)[0] == -errno.EINVAL
    assert env.test(T.IOMMU_TEST_OP_MOCK_DOMAIN, 99)[0] == -errno.ENOENT
    n = len(env.ctx.objects)
    assert env.test(T.IOMMU_TEST_OP_MOCK_DOMAIN, 99)[0] == -errno.ENOENT
    assert len(env.ctx.objects) == n  # a failed MOCK_DOMAIN leaves nothing behind
    # the device id is the driver's: DESTROY says EBUSY; destroying stdev frees all
    assert env.call(I.IOMMU_DESTROY, I.IommuDestroy(8, idev))[0] == -errno.EBUSY
    env.ok(I.IOMMU_DESTROY, I.IommuDestroy(8, stdev))
    assert idev not in env.ctx.objects


def test_mock_domain_replace(env: Env) -> None:
    i, j = env.ioas(), env.ioas()
    stdev, hwpt, _ = env.mock_domain(i)
    rc, data = env.test(
        T.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, T.MockDomainReplace(j)
    )
    assert rc == 0
    new = T.MockDomainReplace.unpack_from(data).pt_id
    assert new != hwpt and hwpt not in env.ctx.objects  # the old auto HWPT went
    assert (
        env.test(T.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, 99, T.MockDomainReplace(j))[0]
        == -errno.ENOENT
    )
    assert (
        env.test(T.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, i, T.MockDomainReplace(j))[0]
        == -errno.ENOENT
    )


def test_md_check_map(env: Env) -> None:
    i = env.ioas()
    _, hwpt, _ = env.mock_domain(i)
    env.map(i, START, MB)
    op = T.IOMMU_TEST_OP_MD_CHECK_MAP
    env.test_ok(op, hwpt, T.CheckMap(START + 2048, 2048, env.buf + 2048))
    assert env.test(op, hwpt, T.CheckMap(START, MB, env.buf + 4096))[0] == -errno.EINVAL
    assert env.test(op, hwpt, T.CheckMap(START + 1, 2048, env.buf))[0] == -errno.EINVAL
    assert env.test(op, hwpt, T.CheckMap(START + MB, 2048, env.buf))[0] == -errno.EINVAL
    assert env.test(op, i, T.CheckMap(START, 2048, env.buf))[0] == -errno.ENOENT


def test_md_check_refs(env: Env) -> None:
    i = env.ioas()
    env.map(i, START, MB)
    op = T.IOMMU_TEST_OP_MD_CHECK_REFS
    env.test_ok(op, 0, T.CheckRefs(4096, env.buf, 0))  # no domain: nothing pinned
    env.mock_domain(i)
    env.test_ok(op, 0, T.CheckRefs(MB, env.buf, 1))
    assert env.test(op, 0, T.CheckRefs(4096, env.buf, 2))[0] == -errno.EIO
    assert env.test(op, 0, T.CheckRefs(100, env.buf, 1))[0] == -errno.EINVAL
    assert env.test(op, 0, T.CheckRefs(4096, 0x1000, 1))[0] == -errno.EFAULT


def test_dev_check_cache_and_iotlb(env: Env) -> None:
    i = env.ioas()
    _, _, idev = env.mock_domain(i)
    op = T.IOMMU_TEST_OP_DEV_CHECK_CACHE
    for k in range(4):
        env.test_ok(op, idev, T.CheckDevCache(k, T.IOMMU_TEST_DEV_CACHE_DEFAULT))
    assert (
        env.test(op, idev, T.CheckDevCache(4, T.IOMMU_TEST_DEV_CACHE_DEFAULT))[0]
        == -errno.EINVAL
    )
    assert env.test(op, idev, T.CheckDevCache(0, 1))[0] == -errno.EINVAL
    assert env.test(op, 99, T.CheckDevCache(0, 1))[0] == -errno.ENOENT
    # MD_CHECK_IOTLB wants a nested HWPT
    assert (
        env.test(T.IOMMU_TEST_OP_MD_CHECK_IOTLB, i, T.CheckIotlb(0, 0))[0]
        == -errno.ENOENT
    )


def _access(
    env: Env, ioas: int, flags: int = T.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES
) -> int:
    out = env.test_ok(
        T.IOMMU_TEST_OP_CREATE_ACCESS, ioas, T.CreateAccess(0, flags), T.CreateAccess
    )
    return int(out.out_access_fd)


def test_create_access_and_rw(env: Env) -> None:
    i = env.ioas()
    assert (
        env.test(T.IOMMU_TEST_OP_CREATE_ACCESS, i, T.CreateAccess(0, 2))[0]
        == -errno.EOPNOTSUPP
    )
    assert (
        env.test(T.IOMMU_TEST_OP_CREATE_ACCESS, 99, T.CreateAccess(0, 0))[0]
        == -errno.ENOENT
    )
    fd = _access(env, i, 0)
    assert fd in env.c.fds
    env.map(i, 0x100000, MB)
    src = env.c.alloc(b"hello, access!")
    op = T.IOMMU_TEST_OP_ACCESS_RW
    env.test_ok(op, fd, T.AccessRw(0x100010, 14, src, T.MOCK_ACCESS_RW_WRITE))
    assert env.c.mm.read(env.buf + 0x10, 14) == b"hello, access!"
    dst = env.c.alloc(14)
    env.test_ok(op, fd, T.AccessRw(0x100010, 14, dst, 0))
    assert env.c.mm.read(dst, 14) == b"hello, access!"
    assert env.test(op, fd, T.AccessRw(0x300000, 4, dst, 0))[0] == -errno.ENOENT
    assert env.test(op, fd, T.AccessRw(0x100000, 0, dst, 0))[0] == -errno.EINVAL
    assert env.test(op, fd, T.AccessRw(0x100000, 4, dst, 2))[0] == -errno.EOPNOTSUPP
    assert env.test(op, fd, T.AccessRw(0x100000, 32 << 20, dst, 0))[0] == -errno.ENOMEM
    assert env.test(op, 3, T.AccessRw(0x100000, 4, dst, 0))[0] == -errno.EBADFD
    assert env.test(op, 77, T.AccessRw(0x100000, 4, dst, 0))[0] == -errno.EBADFD
    # write to a read-only mapping
    env.map(i, 0x400000, 4096, va=env.buf + 2 * MB, flags=I.IOMMU_IOAS_MAP_READABLE | 1)
    assert env.test(op, fd, T.AccessRw(0x400000, 4, src, 1))[0] == -errno.EPERM


def test_access_pages_pins_block_unmap_until_notified(env: Env) -> None:
    i = env.ioas()
    env.map(i, 0x100000, MB)
    fd = _access(env, i)
    op = T.IOMMU_TEST_OP_ACCESS_PAGES
    out = env.test_ok(
        op, fd, T.AccessPages(0, 0, 0x100000, 8192, env.buf), T.AccessPages
    )
    assert out.out_access_pages_id == 0
    assert (
        env.test(op, fd, T.AccessPages(0, 0, 0x100000, 4096, env.buf + 4096))[0]
        == -errno.EBADE
    )
    assert (
        env.test(op, fd, T.AccessPages(4, 0, 0x100000, 4096, 0))[0] == -errno.EOPNOTSUPP
    )
    assert env.test(op, fd, T.AccessPages(0, 0, 0x900000, 4096, 0))[0] == -errno.ENOENT
    # the pin holds the area; an unmap notifies the holder, who unpins: success
    env.ok(I.IOMMU_IOAS_UNMAP, I.IommuIoasUnmap(24, i, 0x100000, MB))
    # the item went with the notification
    d = T.DestroyAccessPages(0)
    assert env.test(T.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, fd, d)[0] == -errno.ENOENT
    # an access without NEEDS_PIN_PAGES cannot pin
    fd2 = _access(env, i, 0)
    env.map(i, 0x100000, MB)
    assert (
        env.test(op, fd2, T.AccessPages(0, 0, 0x100000, 4096, 0))[0]
        == -errno.EOPNOTSUPP
    )


def test_access_replace_ioas_and_destroy_pages(env: Env) -> None:
    i, j = env.ioas(), env.ioas()
    env.map(i, 0x100000, MB)
    fd = _access(env, i)
    env.test_ok(
        T.IOMMU_TEST_OP_ACCESS_PAGES, fd, T.AccessPages(0, 0, 0x100000, 4096, 0)
    )
    rep = T.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS
    assert env.test(rep, fd, T.AccessReplaceIoas(j))[0] == -errno.EBUSY
    env.test_ok(T.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, fd, T.DestroyAccessPages(0))
    env.test_ok(rep, fd, T.AccessReplaceIoas(j))
    assert env.test(rep, fd, T.AccessReplaceIoas(99))[0] == -errno.ENOENT
    # an IOAS with an access attached is in use
    assert env.call(I.IOMMU_DESTROY, I.IommuDestroy(8, j))[0] == -errno.EBUSY
    env.c.fds[fd].handle.release()  # type: ignore[union-attr]  # close the access fd
    env.ok(I.IOMMU_DESTROY, I.IommuDestroy(8, j))


def test_set_temp_memory_limit(env: Env) -> None:
    op = T.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT
    assert env.test(op, 0, T.MemoryLimit(11))[0] == -errno.EINVAL
    env.test_ok(op, 0, T.MemoryLimit(12))
    assert env.ctx.test is not None and env.ctx.test.memory_limit == 12
    # the daemon's one CONFIG_IOMMUFD_TEST state: every open of /dev/iommu sees it
    assert env.m.iommufd_open(env.c, 0).test is env.ctx.test


def test_dirty_op(env: Env) -> None:
    i = env.ioas()
    _, hwpt, _ = env.mock_domain(i)
    env.map(i, START, MB)
    bitmap = env.c.alloc(b"\x05")  # pages 0 and 2
    op = T.IOMMU_TEST_OP_DIRTY
    d = T.Dirty(0, bytes(4), START, 8 * 4096, 4096, bitmap, 0)
    assert env.test(op, hwpt, d)[0] == -errno.EINVAL  # tracking is off
    # a HWPT made with DIRTY_TRACKING, tracking on
    _, _, idev = env.mock_domain(env.ioas())
    rc, dhwpt = env.hwpt(idev, i, I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    assert rc == 0
    env.ok(
        I.IOMMU_HWPT_SET_DIRTY_TRACKING, I.IommuHwptSetDirtyTracking(16, 1, dhwpt, 0)
    )
    out = env.test_ok(op, dhwpt, d, T.Dirty)
    assert out.out_nr_dirty == 2
    for bad in (
        T.Dirty(0, bytes(4), START, 8 * 4096, 0, bitmap, 0),
        T.Dirty(0, bytes(4), START + 1, 8 * 4096, 4096, bitmap, 0),
        T.Dirty(0, bytes(4), START, 0, 4096, bitmap, 0),
        T.Dirty(0, bytes(4), START, 4096, 4096, 0, 0),
    ):
        assert env.test(op, dhwpt, bad)[0] == -errno.EINVAL
    assert env.test(op, 99, d)[0] == -errno.ENOENT


def test_pasid_ops(env: Env) -> None:
    i = env.ioas()
    stdev, _, idev = env.mock_domain(i, T.MOCK_FLAGS_DEVICE_PASID)
    rc, plain = env.hwpt(idev, i)
    rc2, pasid_hwpt = env.hwpt(idev, i, I.IOMMU_HWPT_ALLOC_PASID)
    assert rc == rc2 == 0
    att = T.IOMMU_TEST_OP_PASID_ATTACH
    # the device's own HWPT (an auto one) is not PASID-capable: EINVAL
    assert env.test(att, stdev, T.PasidAttach(5, pasid_hwpt))[0] == -errno.EINVAL
    env.test_ok(
        T.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, T.MockDomainReplace(pasid_hwpt)
    )
    assert env.test(att, stdev, T.PasidAttach(5, plain))[0] == -errno.EINVAL
    env.test_ok(att, stdev, T.PasidAttach(5, pasid_hwpt))
    chk = T.IOMMU_TEST_OP_PASID_CHECK_HWPT
    env.test_ok(chk, stdev, T.PasidCheck(5, pasid_hwpt))
    assert env.test(chk, stdev, T.PasidCheck(6, pasid_hwpt))[0] == -errno.EINVAL
    env.test_ok(chk, stdev, T.PasidCheck(6, 0))
    assert env.test(chk, stdev, T.PasidCheck(5, 0))[0] == -errno.EINVAL
    assert env.test(chk, stdev, T.PasidCheck(5, 99))[0] == -errno.ENOENT
    # attach again elsewhere is EINVAL; replace is the way
    rc, other = env.hwpt(idev, i, I.IOMMU_HWPT_ALLOC_PASID)
    assert env.test(att, stdev, T.PasidAttach(5, other))[0] == -errno.EINVAL
    rep = T.IOMMU_TEST_OP_PASID_REPLACE
    env.test_ok(rep, stdev, T.PasidAttach(5, other))
    env.test_ok(chk, stdev, T.PasidCheck(5, other))
    assert (
        env.test(rep, stdev, T.PasidAttach(7, other))[0] == -errno.EINVAL
    )  # not attached
    # a HWPT in use by a PASID is busy
    assert env.call(I.IOMMU_DESTROY, I.IommuDestroy(8, other))[0] == -errno.EBUSY
    env.test_ok(T.IOMMU_TEST_OP_PASID_DETACH, stdev, T.PasidDetach(5))
    env.test_ok(chk, stdev, T.PasidCheck(5, 0))
    env.ok(I.IOMMU_DESTROY, I.IommuDestroy(8, other))
    # beyond MOCK_PASID_WIDTH, and a device without PASIDs
    assert env.test(att, stdev, T.PasidAttach(1 << 20, pasid_hwpt))[0] == -errno.EINVAL
    nopasid, _, _ = env.mock_domain(i)
    assert env.test(att, nopasid, T.PasidAttach(5, pasid_hwpt))[0] == -errno.EINVAL
    assert env.test(att, 99, T.PasidAttach(5, pasid_hwpt))[0] == -errno.ENOENT


def test_pasid_1024_fails_every_second_change(env: Env) -> None:
    i = env.ioas()
    _, _, idev = env.mock_domain(i, T.MOCK_FLAGS_DEVICE_PASID)
    _, h1 = env.hwpt(idev, i, I.IOMMU_HWPT_ALLOC_PASID)
    _, h2 = env.hwpt(idev, i, I.IOMMU_HWPT_ALLOC_PASID)
    stdev, _, _ = env.mock_domain(h1, T.MOCK_FLAGS_DEVICE_PASID)
    att, rep = T.IOMMU_TEST_OP_PASID_ATTACH, T.IOMMU_TEST_OP_PASID_REPLACE
    env.test_ok(att, stdev, T.PasidAttach(T.IOMMU_TEST_PASID_RESERVED, h1))
    assert (
        env.test(rep, stdev, T.PasidAttach(T.IOMMU_TEST_PASID_RESERVED, h2))[0]
        == -errno.ENOMEM
    )
    # the failed replace left the old HWPT attached
    env.test_ok(
        T.IOMMU_TEST_OP_PASID_CHECK_HWPT,
        stdev,
        T.PasidCheck(T.IOMMU_TEST_PASID_RESERVED, h1),
    )
    env.test_ok(rep, stdev, T.PasidAttach(T.IOMMU_TEST_PASID_RESERVED, h2))


def test_dmabuf_get_map_and_revoke(env: Env) -> None:
    i = env.ioas()
    _, hwpt, _ = env.mock_domain(i)
    op = T.IOMMU_TEST_OP_DMABUF_GET
    assert env.test(op, 0, T.DmabufGet(0, 0))[0] == -errno.EINVAL
    assert env.test(op, 0, T.DmabufGet(513 * 4096, 0))[0] == -errno.EINVAL
    assert env.test(op, 0, T.DmabufGet(4096, 0o1))[0] == -errno.EINVAL
    fd = env.test(op, 0, T.DmabufGet(3000, 0o2000000))[0]
    assert fd > 0 and isinstance(env.c.fds[fd], OurFile)
    dmabuf = env.c.fds[fd].handle  # type: ignore[union-attr]
    # IOAS_MAP_FILE takes the dma-buf: a page of it at START
    st = I.IommuIoasMapFile(40, 7, i, fd, 0, 4096, START)
    rc, _ = env.call(I.IOMMU_IOAS_MAP_FILE, st)
    assert rc == 0
    assert env.ctx.ioases()[0].iopt.areas[0].acct is None  # dma-bufs pin uncharged
    t = env.ctx.objects[hwpt].domain.translate(START)
    assert t is not None and t.owner is dmabuf.mem
    rv = T.IOMMU_TEST_OP_DMABUF_REVOKE
    env.test_ok(rv, 0, T.DmabufRevoke(fd, 1))
    assert env.ctx.objects[hwpt].domain.translate(START) is None
    env.test_ok(rv, 0, T.DmabufRevoke(fd, 0))
    assert env.ctx.objects[hwpt].domain.translate(START) is not None
    assert env.test(rv, 0, T.DmabufRevoke(3, 1))[0] == -errno.EBADFD
