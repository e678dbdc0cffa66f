"""Nested HWPTs, vIOMMU, vDEVICE, vEVENTQ, HW queues and HWPT_INVALIDATE on the mock
IOMMU: the object rules of hw_pagetable.c, viommu.c and eventq.c with their errnos."""

from __future__ import annotations

import errno
import struct

from vfiofs.abi import iommufd as I, iommufd_test as T

from .conftest import MB, Env, err

START = T.MOCK_APERTURE_START
SELFTEST = T.IOMMU_HWPT_DATA_SELFTEST


def _parent(env: Env) -> tuple[int, int, int, int]:
    """(ioas, stdev, idev, nest parent hwpt)."""
    i = env.ioas()
    stdev, _, idev = env.mock_domain(i)
    rc, parent = env.hwpt(idev, i, I.IOMMU_HWPT_ALLOC_NEST_PARENT)
    assert rc == 0
    return i, stdev, idev, parent


def _invalidate(
    env: Env, hwpt: int, entries: list[bytes], dtype: int, entry_len: int | None = None
) -> tuple[int, int]:
    """HWPT_INVALIDATE: (rc, entry_num written back)."""
    blob = b"".join(entries)
    uptr = env.c.alloc(blob) if blob else 0
    elen = entry_len if entry_len is not None else (len(entries[0]) if entries else 0)
    st = I.IommuHwptInvalidate(32, hwpt, uptr, dtype, elen, len(entries), 0)
    rc, out = env.call(I.IOMMU_HWPT_INVALIDATE, st)
    return rc, out.entry_num


def test_nested_hwpt_alloc_rules(env: Env) -> None:
    i, stdev, idev, parent = _parent(env)
    data = T.IommuHwptSelftest(T.IOMMU_TEST_IOTLB_DEFAULT, 0)
    rc, nested = env.hwpt(idev, parent, 0, data, SELFTEST)
    assert rc == 0
    for k in range(4):
        env.test_ok(
            T.IOMMU_TEST_OP_MD_CHECK_IOTLB,
            nested,
            T.CheckIotlb(k, T.IOMMU_TEST_IOTLB_DEFAULT),
        )
    # data_type and data_len must agree
    assert env.hwpt(idev, parent, 0, None, SELFTEST)[0] == -errno.EINVAL
    # a parent that is not a nesting parent
    rc, plain = env.hwpt(idev, i)
    assert env.hwpt(idev, plain, 0, data, SELFTEST)[0] == -errno.EINVAL
    # a data type the mock does not know
    assert env.hwpt(idev, parent, 0, data, 0x1234)[0] == -errno.EOPNOTSUPP
    # nested on nested: EINVAL (pt_id of the wrong kind)
    assert env.hwpt(idev, nested, 0, data, SELFTEST)[0] == -errno.EINVAL
    # a short data blob: EINVAL
    short = env.c.alloc(b"\0\0")
    st = I.IommuHwptAlloc(48, 0, idev, parent, 0, 0, SELFTEST, 2, short, 0, 0)
    assert env.call(I.IOMMU_HWPT_ALLOC, st)[0] == -errno.EINVAL
    # the parent is held by its child
    assert env.call(I.IOMMU_DESTROY, I.IommuDestroy(8, parent))[0] == -errno.EBUSY
    # attach the mock device to the nested HWPT, then check it is on it
    env.test_ok(T.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, T.MockDomainReplace(nested))
    assert env.call(I.IOMMU_DESTROY, I.IommuDestroy(8, nested))[0] == -errno.EBUSY
    env.test_ok(T.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, T.MockDomainReplace(i))
    env.ok(I.IOMMU_DESTROY, I.IommuDestroy(8, nested))
    env.ok(I.IOMMU_DESTROY, I.IommuDestroy(8, parent))


def test_hwpt_invalidate_partial_progress(env: Env) -> None:
    _, _, idev, parent = _parent(env)
    _rc, nested = env.hwpt(
        idev, parent, 0, T.IommuHwptSelftest(T.IOMMU_TEST_IOTLB_DEFAULT, 0), SELFTEST
    )
    inv = T.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST
    e = lambda flags, i: T.IommuHwptInvalidateSelftest(flags, i).pack()  # noqa: E731
    # an empty array checks the type only
    assert _invalidate(env, nested, [], inv) == (0, 0)
    assert _invalidate(
        env, nested, [e(0, 1)], T.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID
    ) == (-errno.EINVAL, 0)
    # entries 0 and 1 are done, entry 2 has a bad id: EINVAL, entry_num = 2
    assert _invalidate(env, nested, [e(0, 1), e(0, 2), e(0, 9), e(0, 3)], inv) == (
        -errno.EINVAL,
        2,
    )
    chk = T.IOMMU_TEST_OP_MD_CHECK_IOTLB
    env.test_ok(chk, nested, T.CheckIotlb(0, T.IOMMU_TEST_IOTLB_DEFAULT))
    env.test_ok(chk, nested, T.CheckIotlb(1, 0))
    env.test_ok(chk, nested, T.CheckIotlb(2, 0))
    env.test_ok(chk, nested, T.CheckIotlb(3, T.IOMMU_TEST_IOTLB_DEFAULT))
    assert _invalidate(env, nested, [e(2, 0)], inv) == (-errno.EOPNOTSUPP, 0)
    # a longer entry with a non-zero tail: E2BIG; a zero tail is fine
    assert _invalidate(env, nested, [e(0, 0) + b"\1\0\0\0"], inv) == (-errno.E2BIG, 0)
    assert _invalidate(env, nested, [e(0, 0) + bytes(4)], inv) == (0, 1)
    assert _invalidate(env, nested, [e(1, 0)], inv) == (0, 1)
    env.test_ok(chk, nested, T.CheckIotlb(3, 0))
    # entries without a pointer or length, reserved, and the wrong object
    st = I.IommuHwptInvalidate(32, nested, 0, inv, 8, 1, 0)
    assert env.call(I.IOMMU_HWPT_INVALIDATE, st)[0] == -errno.EINVAL
    st = I.IommuHwptInvalidate(32, nested, 0, inv, 0, 0, 1)
    assert env.call(I.IOMMU_HWPT_INVALIDATE, st)[0] == -errno.EOPNOTSUPP
    assert _invalidate(env, parent, [e(0, 0)], inv)[0] == -errno.EINVAL
    assert _invalidate(env, 99, [e(0, 0)], inv)[0] == -errno.ENOENT


def _viommu(env: Env, idev: int, parent: int, data: bytes = b"") -> tuple[int, int]:
    uptr = env.c.alloc(data) if data else 0
    st = I.IommuViommuAlloc(
        40, 0, T.IOMMU_VIOMMU_TYPE_SELFTEST, idev, parent, 0, len(data), 0, uptr
    )
    rc, out = env.call(I.IOMMU_VIOMMU_ALLOC, st)
    return rc, int(out.out_viommu_id)


def test_viommu_vdevice_and_cache_invalidation(env: Env) -> None:
    i, stdev, idev, parent = _parent(env)
    blob = T.IommuViommuSelftest(0xCAFE, 0, 0, 0).pack()
    uptr = env.c.alloc(blob)
    st = I.IommuViommuAlloc(
        40, 0, T.IOMMU_VIOMMU_TYPE_SELFTEST, idev, parent, 0, len(blob), 0, uptr
    )
    rc, out = env.call(I.IOMMU_VIOMMU_ALLOC, st)
    assert rc == 0
    viommu = out.out_viommu_id
    assert (
        T.IommuViommuSelftest.unpack_from(env.c.mm.read(uptr, len(blob))).out_data
        == 0xCAFE
    )
    # errors: flags, DEFAULT type, an unknown type, a non-parent HWPT
    bad = I.IommuViommuAlloc(
        40, 1, T.IOMMU_VIOMMU_TYPE_SELFTEST, idev, parent, 0, 0, 0, 0
    )
    assert env.call(I.IOMMU_VIOMMU_ALLOC, bad)[0] == -errno.EOPNOTSUPP
    bad = I.IommuViommuAlloc(40, 0, 0, idev, parent, 0, 0, 0, 0)
    assert env.call(I.IOMMU_VIOMMU_ALLOC, bad)[0] == -errno.EOPNOTSUPP
    bad = I.IommuViommuAlloc(40, 0, 7, idev, parent, 0, 0, 0, 0)
    assert env.call(I.IOMMU_VIOMMU_ALLOC, bad)[0] == -errno.EOPNOTSUPP
    rc, plain = env.hwpt(idev, i)
    assert _viommu(env, idev, plain)[0] == -errno.EINVAL
    assert _viommu(env, idev, 99)[0] == -errno.ENOENT
    # vDEVICE
    va = lambda v, d, vid: I.IommuVdeviceAlloc(24, v, d, 0, vid)  # noqa: E731
    vdev = env.ok(I.IOMMU_VDEVICE_ALLOC, va(viommu, idev, 0x42)).out_vdevice_id
    assert env.call(I.IOMMU_VDEVICE_ALLOC, va(viommu, idev, 0x43))[0] == -errno.EEXIST
    _, _, idev2 = env.mock_domain(i)
    assert env.call(I.IOMMU_VDEVICE_ALLOC, va(viommu, idev2, 0x42))[0] == -errno.EEXIST
    assert env.call(I.IOMMU_VDEVICE_ALLOC, va(99, idev2, 0x44))[0] == -errno.ENOENT
    # vIOMMU cache invalidation clears the device cache of the named vdev
    inv = T.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST
    e = lambda f, v, c: T.IommuViommuInvalidateSelftest(f, v, c).pack()  # noqa: E731
    assert _invalidate(env, viommu, [e(0, 0x42, 1)], inv) == (0, 1)
    chk = T.IOMMU_TEST_OP_DEV_CHECK_CACHE
    env.test_ok(chk, idev, T.CheckDevCache(1, 0))
    env.test_ok(chk, idev, T.CheckDevCache(0, T.IOMMU_TEST_DEV_CACHE_DEFAULT))
    assert _invalidate(env, viommu, [e(0, 0x42, 2), e(0, 0x99, 0)], inv) == (
        -errno.EINVAL,
        1,
    )
    assert _invalidate(env, viommu, [e(0, 0x42, 4)], inv) == (-errno.EINVAL, 0)
    assert _invalidate(env, viommu, [e(1, 0x42, 0)], inv) == (0, 1)
    for k in range(4):
        env.test_ok(chk, idev, T.CheckDevCache(k, 0))
    # a nested HWPT from the vIOMMU
    rc, nested = env.hwpt(idev, viommu, 0, T.IommuHwptSelftest(7, 0), SELFTEST)
    assert rc == 0
    env.test_ok(T.IOMMU_TEST_OP_MD_CHECK_IOTLB, nested, T.CheckIotlb(3, 7))
    # lifetimes: everything holds what it uses
    for busy in (viommu, parent):
        assert env.call(I.IOMMU_DESTROY, I.IommuDestroy(8, busy))[0] == -errno.EBUSY
    env.ok(I.IOMMU_DESTROY, I.IommuDestroy(8, nested))
    env.ok(I.IOMMU_DESTROY, I.IommuDestroy(8, vdev))
    env.ok(I.IOMMU_DESTROY, I.IommuDestroy(8, viommu))
    env.ok(I.IOMMU_DESTROY, I.IommuDestroy(8, parent))
    # destroying the mock device takes its vDEVICE with it
    viommu2 = _viommu(env, idev, env.hwpt(idev, i, 1)[1])[1]
    vdev2 = env.ok(I.IOMMU_VDEVICE_ALLOC, va(viommu2, idev, 5)).out_vdevice_id
    env.ok(I.IOMMU_DESTROY, I.IommuDestroy(8, stdev))
    assert vdev2 not in env.ctx.objects


def _veventq(
    env: Env, viommu: int, depth: int = 2, vtype: int = T.IOMMU_VEVENTQ_TYPE_SELFTEST
) -> tuple[int, int, int]:
    st = I.IommuVeventqAlloc(32, 0, viommu, vtype, depth, 0, 0, 0)
    rc, out = env.call(I.IOMMU_VEVENTQ_ALLOC, st)
    return rc, out.out_veventq_id, out.out_veventq_fd


def test_veventq_sequence_and_lost_events(env: Env) -> None:
    _i, _stdev, idev, parent = _parent(env)
    viommu = _viommu(env, idev, parent)[1]
    trig = T.IOMMU_TEST_OP_TRIGGER_VEVENT
    assert env.test(trig, 0, T.TriggerVevent(idev))[0] == -errno.ENOENT  # no vDEVICE
    env.ok(I.IOMMU_VDEVICE_ALLOC, I.IommuVdeviceAlloc(24, viommu, idev, 0, 0x77))
    assert env.test(trig, 0, T.TriggerVevent(idev))[0] == -errno.EOPNOTSUPP  # no queue
    rc, qid, fd = _veventq(env, viommu, depth=2)
    assert rc == 0 and fd in env.c.fds
    f = env.c.fds[fd].handle  # type: ignore[union-attr]
    assert _veventq(env, viommu)[0] == -errno.EEXIST
    assert _veventq(env, viommu, depth=0, vtype=5)[0] == -errno.EINVAL
    assert _veventq(env, viommu, vtype=0)[0] == -errno.EOPNOTSUPP
    assert f.poll(env.c)[0] == 0
    assert f.read(env.c, 0, 64) == b""
    for _ in range(5):
        env.test_ok(trig, 0, T.TriggerVevent(idev))
    assert f.poll(env.c)[0] & 0x1
    # two events fit the depth; the three lost ones leave one LOST header (seq 4)
    hdr = lambda fl, seq: struct.pack("<II", fl, seq)  # noqa: E731
    ev = struct.pack("<I", 0x77)
    assert f.read(env.c, 0, 11) == b""  # too small for header + data
    assert f.read(env.c, 0, 12) == hdr(0, 0) + ev
    assert f.read(env.c, 0, 100) == hdr(0, 1) + ev + hdr(1, 4)
    assert f.read(env.c, 0, 100) == b""
    env.test_ok(trig, 0, T.TriggerVevent(idev))
    assert f.read(env.c, 0, 100) == hdr(0, 5) + ev
    # the open fd holds the queue; closing it lets DESTROY through
    assert env.call(I.IOMMU_DESTROY, I.IommuDestroy(8, qid))[0] == -errno.EBUSY
    assert env.call(I.IOMMU_DESTROY, I.IommuDestroy(8, viommu))[0] == -errno.EBUSY
    f.release()
    env.ok(I.IOMMU_DESTROY, I.IommuDestroy(8, qid))


def test_veventq_read_at_offset_is_espipe(env: Env) -> None:
    _, _, idev, parent = _parent(env)
    viommu = _viommu(env, idev, parent)[1]
    _, _, fd = _veventq(env, viommu)
    f = env.c.fds[fd].handle  # type: ignore[union-attr]
    assert err(f.read, env.c, 8, 64) == -errno.ESPIPE
    assert err(f.write, env.c, 0, b"x" * 8) == -errno.EINVAL


def test_hw_queue_alloc_rules(env: Env) -> None:
    i, _, idev, parent = _parent(env)
    viommu = _viommu(env, idev, parent)[1]
    env.map(i, START, MB)

    def q(idx, base, length, qtype=T.IOMMU_HW_QUEUE_TYPE_SELFTEST):
        return I.IommuHwQueueAlloc(40, 0, viommu, qtype, idx, 0, base, length)

    assert (
        env.call(I.IOMMU_HW_QUEUE_ALLOC, q(1, START, 4096))[0] == -errno.EIO
    )  # 0 first
    assert env.call(I.IOMMU_HW_QUEUE_ALLOC, q(2, START, 4096))[0] == -errno.EINVAL
    assert env.call(I.IOMMU_HW_QUEUE_ALLOC, q(0, START, 0))[0] == -errno.EINVAL
    assert (
        env.call(I.IOMMU_HW_QUEUE_ALLOC, q(0, START, 4096, 0))[0] == -errno.EOPNOTSUPP
    )
    assert (
        env.call(I.IOMMU_HW_QUEUE_ALLOC, q(0, START, 4096, 9))[0] == -errno.EOPNOTSUPP
    )
    assert (
        env.call(I.IOMMU_HW_QUEUE_ALLOC, q(0, (1 << 64) - 8, 16))[0] == -errno.EOVERFLOW
    )
    assert env.call(I.IOMMU_HW_QUEUE_ALLOC, q(0, START + MB, 4096))[0] == -errno.ENOENT
    q0 = env.ok(I.IOMMU_HW_QUEUE_ALLOC, q(0, START, 4096)).out_hw_queue_id
    assert env.call(I.IOMMU_HW_QUEUE_ALLOC, q(0, START, 4096))[0] == -errno.EEXIST
    q1 = env.ok(I.IOMMU_HW_QUEUE_ALLOC, q(1, START + 8192, 4096)).out_hw_queue_id
    # queue 1 holds queue 0; the queues pin their memory: unmap is EBUSY
    assert env.call(I.IOMMU_DESTROY, I.IommuDestroy(8, q0))[0] == -errno.EBUSY
    unmap = I.IommuIoasUnmap(24, i, START, MB)
    assert env.call(I.IOMMU_IOAS_UNMAP, unmap)[0] == -errno.EBUSY
    env.ok(I.IOMMU_DESTROY, I.IommuDestroy(8, q1))
    env.ok(I.IOMMU_DESTROY, I.IommuDestroy(8, q0))
    env.ok(I.IOMMU_IOAS_UNMAP, unmap)


def test_pci_device_behind_the_mock_reports_selftest_hw_info(env: Env) -> None:
    _, dev_id = env.bind_pci(0)
    data = env.c.alloc(16)
    st = I.IommuHwInfo(40, 0, dev_id, 16, data, 0, 0, bytes(3), 0)
    out = env.ok(I.IOMMU_GET_HW_INFO, st)
    assert out.out_data_type == T.IOMMU_HW_INFO_TYPE_SELFTEST
    assert out.data_len == 8
    assert out.out_capabilities & I.IOMMU_HW_CAP_DIRTY_TRACKING
    assert out.out_max_pasid_log2 == 20  # the device's pasid key
    assert (
        T.IommuTestHwInfo.unpack_from(env.c.mm.read(data, 8)).test_reg
        == T.IOMMU_HW_INFO_SELFTEST_REGVAL
    )
    assert env.c.mm.read(data + 8, 8) == bytes(8)
    st = I.IommuHwInfo(40, 1, dev_id, 16, data, 0x1234, 0, bytes(3), 0)
    assert env.call(I.IOMMU_GET_HW_INFO, st)[0] == -errno.EOPNOTSUPP
