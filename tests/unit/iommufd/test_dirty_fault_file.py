"""Dirty tracking through DMA, the fault queue, IOAS_MAP_FILE and IOAS_CHANGE_PROCESS."""

from __future__ import annotations

import errno

import attrs

from vfiofs.abi import iommufd as I, iommufd_test as T
from vfiofs.errors import KernelError
from vfiofs.iommufd.main import iommufd_fops_open
from vfiofs.uaccess import (
    CAP_IPC_LOCK,
    BytesAddressSpace,
    FakeCaller,
    ForeignFile,
    OurFile,
)

from .conftest import MB, Env, dirty_bitmap, err, memcpy

START = T.MOCK_APERTURE_START


def _dirty_setup(env: Env) -> tuple[int, int]:
    i = env.ioas()
    df, dev_id = env.bind_pci(0)
    rc, hwpt = env.hwpt(dev_id, i, I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    assert rc == 0
    env.attach_pci(df, hwpt)
    env.map(i, START, MB)
    return i, hwpt


def test_dma_writes_mark_pages_dirty(env: Env) -> None:
    _, hwpt = _dirty_setup(env)
    assert dirty_bitmap(env, hwpt, START, MB, 4096)[0] == -errno.EINVAL  # tracking off
    assert memcpy(env, START, START + 0x8000, 100) == 2
    env.ok(I.IOMMU_HWPT_SET_DIRTY_TRACKING, I.IommuHwptSetDirtyTracking(16, 1, hwpt, 0))
    assert dirty_bitmap(env, hwpt, START, MB, 4096) == (0, 0)  # enabling cleared it
    assert memcpy(env, START, START + 0x8000, 5000) == 2  # dirties pages 8 and 9
    assert memcpy(env, START + 0x8000, START + 0x20000, 16) == 2  # page 0x20
    want = 1 << 8 | 1 << 9 | 1 << 0x20
    assert dirty_bitmap(
        env, hwpt, START, MB, 4096, I.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR
    ) == (0, want)
    # 2K granularity on the mock: the bits follow the IO pages written
    assert dirty_bitmap(
        env, hwpt, START + 0x8000, 0x4000, 2048, I.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR
    ) == (0, 0b111)
    assert dirty_bitmap(env, hwpt, START, MB, 4096) == (0, want)  # read and clear
    assert dirty_bitmap(env, hwpt, START, MB, 4096) == (0, 0)
    # a device that only reads dirties nothing
    dev = env.m.devices["0000:00:04.0"]
    dev.dma_read(START + 0x40000, 64)
    assert dirty_bitmap(env, hwpt, START, MB, 4096) == (0, 0)
    env.ok(I.IOMMU_HWPT_SET_DIRTY_TRACKING, I.IommuHwptSetDirtyTracking(16, 0, hwpt, 0))
    assert memcpy(env, START, START + 0x8000, 100) == 2
    assert dirty_bitmap(env, hwpt, START, MB, 4096)[0] == -errno.EINVAL


def test_dirty_ioctl_errors(env: Env) -> None:
    i, hwpt = _dirty_setup(env)
    sdt = I.IOMMU_HWPT_SET_DIRTY_TRACKING
    assert (
        env.call(sdt, I.IommuHwptSetDirtyTracking(16, 2, hwpt, 0))[0]
        == -errno.EOPNOTSUPP
    )
    assert env.call(sdt, I.IommuHwptSetDirtyTracking(16, 1, i, 0))[0] == -errno.ENOENT
    env.ok(sdt, I.IommuHwptSetDirtyTracking(16, 1, hwpt, 0))
    assert dirty_bitmap(env, hwpt, START, MB, 0)[0] == -errno.EINVAL
    assert dirty_bitmap(env, hwpt, START + 2048, 4096, 4096)[0] == -errno.EINVAL
    assert dirty_bitmap(env, hwpt, START, 1000, 4096)[0] == -errno.EINVAL
    assert dirty_bitmap(env, hwpt, (1 << 64) - 4096, 8192, 4096)[0] == -errno.EOVERFLOW
    st = I.IommuHwptGetDirtyBitmap(48, hwpt, 2, 0, START, MB, 4096, env.buf)
    assert env.call(I.IOMMU_HWPT_GET_DIRTY_BITMAP, st)[0] == -errno.EOPNOTSUPP
    st = I.IommuHwptGetDirtyBitmap(48, hwpt, 0, 0, START, MB, 4096, 0x10)
    memcpy(env, START, START + 4096, 8)
    assert env.call(I.IOMMU_HWPT_GET_DIRTY_BITMAP, st)[0] == -errno.EFAULT
    # a HWPT allocated without DIRTY_TRACKING cannot track; nor can the host IOMMU
    _df, dev_id = env.bind_pci(1)
    _rc, plain = env.hwpt(dev_id, i)
    assert (
        env.call(sdt, I.IommuHwptSetDirtyTracking(16, 1, plain, 0))[0] == -errno.EINVAL
    )
    # a NO_DIRTY mock device cannot get a dirty HWPT nor attach to one
    stdev, _, idev = env.mock_domain(env.ioas(), T.MOCK_FLAGS_DEVICE_NO_DIRTY)
    assert env.hwpt(idev, i, I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)[0] == -errno.EOPNOTSUPP
    rep = T.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE
    assert env.test(rep, stdev, T.MockDomainReplace(hwpt))[0] == -errno.EINVAL


def test_host_iommu_keeps_todays_behaviour() -> None:
    """Without iommu = "mock": no dirty tracking, no nesting data, hw info NONE."""
    from vfiofs.config import default_topology
    from vfiofs.machine import Machine

    m = Machine(default_topology())
    e = Env.__new__(Env)
    e.m, e.c = m, FakeCaller()
    e.c.mm.size = 16 * MB
    e.c.mm.__attrs_post_init__()
    e.ctx = m.iommufd_open(e.c, 0)
    e.c.fds[3] = OurFile(e.ctx)
    e.buf = e.c.alloc(MB, align=MB)
    i = e.ioas()
    _, dev_id = e.bind_pci(0)
    assert e.hwpt(dev_id, i, I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)[0] == -errno.EOPNOTSUPP
    data = T.IommuHwptSelftest(0, 0)
    assert (
        e.hwpt(dev_id, i, 0, data, T.IOMMU_HWPT_DATA_SELFTEST)[0] == -errno.EOPNOTSUPP
    )
    rc, parent = e.hwpt(dev_id, i, I.IOMMU_HWPT_ALLOC_NEST_PARENT)
    assert rc == 0
    assert (
        e.hwpt(dev_id, parent, 0, data, T.IOMMU_HWPT_DATA_SELFTEST)[0]
        == -errno.EOPNOTSUPP
    )
    st = I.IommuHwInfo(40, 0, dev_id, 0, 0, 0, 0, bytes(3), 0)
    out = e.ok(I.IOMMU_GET_HW_INFO, st)
    assert (out.out_data_type, out.data_len, out.out_capabilities) == (0, 0, 0)
    st = I.IommuViommuAlloc(
        40, 0, T.IOMMU_VIOMMU_TYPE_SELFTEST, dev_id, parent, 0, 0, 0, 0
    )
    assert e.call(I.IOMMU_VIOMMU_ALLOC, st)[0] == -errno.EOPNOTSUPP


# --- the fault queue ---------------------------------------------------------------------


def _fault(env: Env) -> tuple[int, object]:
    out = env.ok(I.IOMMU_FAULT_QUEUE_ALLOC, I.IommuFaultAlloc(16, 0, 0, 0))
    return out.out_fault_id, env.c.fds[out.out_fault_fd].handle  # type: ignore[union-attr]


def test_fault_queue_round_trip(env: Env) -> None:
    assert (
        env.call(I.IOMMU_FAULT_QUEUE_ALLOC, I.IommuFaultAlloc(16, 1, 0, 0))[0]
        == -errno.EOPNOTSUPP
    )
    fault_id, f = _fault(env)
    i = env.ioas()
    stdev, _, idev = env.mock_domain(i, T.MOCK_FLAGS_DEVICE_PASID)
    rc, hwpt = env.hwpt(
        idev,
        i,
        I.IOMMU_HWPT_FAULT_ID_VALID | I.IOMMU_HWPT_ALLOC_PASID,
        fault_id=fault_id,
    )
    assert rc == 0
    assert (
        env.hwpt(idev, i, I.IOMMU_HWPT_FAULT_ID_VALID, fault_id=i)[0] == -errno.ENOENT
    )
    env.test_ok(T.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, T.MockDomainReplace(hwpt))
    assert f.poll(env.c)[0] == 0x4  # type: ignore[attr-defined]  # POLLOUT only
    trig = T.TriggerIopf(idev, 0, 0x15, I.IOMMU_PGFAULT_PERM_READ, START + 0x3000)
    env.test_ok(T.IOMMU_TEST_OP_TRIGGER_IOPF, 0, trig)
    assert f.poll(env.c)[0] & 0x41 == 0x41  # type: ignore[attr-defined]
    assert err(f.read, env.c, 0, 39) == -errno.ESPIPE  # type: ignore[attr-defined]
    assert err(f.read, env.c, 40, 40) == -errno.ESPIPE  # type: ignore[attr-defined]
    assert f.read(env.c, 0, 0) == b""  # type: ignore[attr-defined]
    rec = I.IommuHwptPgfault.unpack_from(f.read(env.c, 0, 80))  # type: ignore[attr-defined]
    assert (
        rec.flags,
        rec.dev_id,
        rec.pasid,
        rec.grpid,
        rec.perm,
        rec.addr,
        rec.cookie,
    ) == (I.IOMMU_PGFAULT_FLAGS_LAST_PAGE, idev, 0, 0x15, 1, START + 0x3000, 1)
    # responses: 8 bytes each, a bad code or cookie is EINVAL, partial progress counts
    assert err(f.write, env.c, 0, b"\0" * 7) == -errno.ESPIPE  # type: ignore[attr-defined]
    bad_code = I.IommuHwptPageResponse(1, 5).pack()
    assert err(f.write, env.c, 0, bad_code) == -errno.EINVAL  # type: ignore[attr-defined]
    good = I.IommuHwptPageResponse(1, I.IOMMUFD_PAGE_RESP_SUCCESS).pack()
    assert f.write(env.c, 0, good + I.IommuHwptPageResponse(9, 0).pack()) == 8  # type: ignore[attr-defined]
    assert err(f.write, env.c, 0, good) == -errno.EINVAL  # type: ignore[attr-defined]
    # a PASID fault: the PASID_VALID flag; a fault with no queue attached is dropped
    env.test_ok(T.IOMMU_TEST_OP_PASID_ATTACH, stdev, T.PasidAttach(7, hwpt))
    env.test_ok(T.IOMMU_TEST_OP_TRIGGER_IOPF, 0, attrs.evolve(trig, pasid=7))
    rec = I.IommuHwptPgfault.unpack_from(f.read(env.c, 0, 40))  # type: ignore[attr-defined]
    assert rec.pasid == 7 and rec.flags & I.IOMMU_PGFAULT_FLAGS_PASID_VALID
    env.test_ok(T.IOMMU_TEST_OP_TRIGGER_IOPF, 0, attrs.evolve(trig, pasid=8))
    assert f.read(env.c, 0, 40) == b""  # type: ignore[attr-defined]
    # the queue is held by its HWPT and by the open fd
    assert env.call(I.IOMMU_DESTROY, I.IommuDestroy(8, fault_id))[0] == -errno.EBUSY


def test_detach_answers_pending_faults_invalid(env: Env) -> None:
    fault_id, f = _fault(env)
    i = env.ioas()
    stdev, _, idev = env.mock_domain(i)
    _, hwpt = env.hwpt(idev, i, I.IOMMU_HWPT_FAULT_ID_VALID, fault_id=fault_id)
    env.test_ok(T.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, T.MockDomainReplace(hwpt))
    trig = T.TriggerIopf(idev, 0, 1, 1, START)
    env.test_ok(T.IOMMU_TEST_OP_TRIGGER_IOPF, 0, trig)
    env.test_ok(T.IOMMU_TEST_OP_TRIGGER_IOPF, 0, trig)
    assert len(f.read(env.c, 0, 40)) == 40  # type: ignore[attr-defined]  # one waits for its answer
    env.test_ok(T.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev, T.MockDomainReplace(i))
    assert f.read(env.c, 0, 80) == b""  # type: ignore[attr-defined]
    # already answered INVALID by the detach
    resp = I.IommuHwptPageResponse(1, 0).pack()
    assert err(f.write, env.c, 0, resp) == -errno.EINVAL  # type: ignore[attr-defined]


def test_device_dma_fault_on_a_fault_capable_hwpt_is_delivered(env: Env) -> None:
    fault_id, f = _fault(env)
    i = env.ioas()
    df, dev_id = env.bind_pci(0)
    _, hwpt = env.hwpt(dev_id, i, I.IOMMU_HWPT_FAULT_ID_VALID, fault_id=fault_id)
    env.attach_pci(df, hwpt)
    env.map(i, START, MB, flags=I.IOMMU_IOAS_MAP_READABLE | 1)
    assert memcpy(env, START, START + 0x2000, 16) == 3  # read-only: the write faults
    rec = I.IommuHwptPgfault.unpack_from(f.read(env.c, 0, 40))  # type: ignore[attr-defined]
    assert rec.dev_id == dev_id and rec.perm == I.IOMMU_PGFAULT_PERM_WRITE
    assert rec.addr == START + 0x2000
    assert memcpy(env, START + 2 * MB, START, 16) == 3  # unmapped source
    rec = I.IommuHwptPgfault.unpack_from(f.read(env.c, 0, 40))  # type: ignore[attr-defined]
    assert rec.perm == I.IOMMU_PGFAULT_PERM_READ and rec.addr == START + 2 * MB


def test_fault_queue_needs_vfiofs_run_on_a_plain_mount(env: Env) -> None:
    """RequestCaller without an installer: EOPNOTSUPP, nothing left behind."""
    from vfiofs.session.peer import ProcessTable, RequestCaller

    class C(RequestCaller):
        pass

    c = C(1, 0, 0, ProcessTable())
    assert err(c.install_fd, object(), None) == -errno.EOPNOTSUPP
    ctx = iommufd_fops_open()

    @attrs.define(eq=False)
    class Refusing(FakeCaller):
        def install_fd(self, file: object, addr: int | None) -> int:
            raise KernelError(errno.EOPNOTSUPP)

    fc = Refusing()
    arg = fc.alloc(I.IommuFaultAlloc(16, 0, 0, 0).pack())
    assert err(ctx.ioctl, fc, I.IOMMU_FAULT_QUEUE_ALLOC, arg) == -errno.EOPNOTSUPP
    assert ctx.objects == {} and ctx.files == 0


# --- IOAS_MAP_FILE / IOAS_CHANGE_PROCESS --------------------------------------------------


@attrs.define(eq=False)
class FakeFile(BytesAddressSpace):
    """A memfd stand-in: memory at file offsets."""

    shmem: bool = True
    closed: bool = False
    areas: int = 0

    def close(self) -> None:
        self.closed = True


def _file(env: Env, fd: int, size: int = MB, shmem: bool = True) -> FakeFile:
    mem = FakeFile(size=size, base=0, shmem=shmem)
    env.c.fds[fd] = ForeignFile("file", file=mem)
    return mem


def test_map_file_dma_reaches_the_file(env: Env) -> None:
    env.c.caps = frozenset()  # no CAP_IPC_LOCK: pinning charges RLIMIT_MEMLOCK
    i = env.ioas()
    df, _dev_id = env.bind_pci(0)
    env.attach_pci(df, i)
    mem = _file(env, 9)
    env.c.mm.write(env.buf, b"from the process")
    env.map(i, START, 4096)
    st = I.IommuIoasMapFile(40, 7, i, 9, 0x3000, 0x2000, START + MB)
    out = env.ok(I.IOMMU_IOAS_MAP_FILE, st)
    assert out.iova == START + MB
    assert memcpy(env, START, START + MB + 0x10, 16) == 2
    assert mem.read(0x3010, 16) == b"from the process"
    assert env.c.mm.locked_vm == 4096 + 0x2000  # the file's pages are charged to us
    env.ok(I.IOMMU_IOAS_UNMAP, I.IommuIoasUnmap(24, i, START + MB, 0x2000))
    assert mem.closed
    assert env.c.mm.locked_vm == 4096


def test_map_file_with_cap_ipc_lock_charges_nothing(env: Env) -> None:
    """iopt_alloc_pages() decides the account mode for user and file pages alike."""
    assert CAP_IPC_LOCK in env.c.caps
    i = env.ioas()
    env.mock_domain(i)
    _file(env, 9)
    env.ok(I.IOMMU_IOAS_MAP_FILE, I.IommuIoasMapFile(40, 7, i, 9, 0, 0x4000, START))
    assert env.c.mm.locked_vm == 0


def test_map_file_errors(env: Env) -> None:
    i = env.ioas()

    def mf(fd: int, start: int, length: int, flags: int = 7, iova: int = START) -> int:
        # each call resolves the fds afresh, as the session does per request
        _file(env, 9, 0x4000)
        _file(env, 10, MB, shmem=False)
        st = I.IommuIoasMapFile(40, flags, i, fd, start, length, iova)
        return int(env.call(I.IOMMU_IOAS_MAP_FILE, st)[0])

    assert mf(9, 0, 4096, flags=8) == -errno.EOPNOTSUPP
    assert mf(9, 0, 4096, flags=1) == -errno.EINVAL
    assert mf(-1, 0, 4096) == -errno.EBADF
    assert mf(55, 0, 4096) == -errno.EBADF
    assert mf(3, 0, 4096) == -errno.EBADF  # an iommufd
    assert mf(9, 0, 0) == -errno.EINVAL
    assert mf(9, 0x2000, 0x4000) == -errno.EINVAL  # past the end of the file
    assert mf(10, 0, 4096) == -errno.EINVAL  # not shmem
    assert mf(9, 0, 4096, iova=(1 << 64) - 1) == -errno.EOVERFLOW
    bad = I.IommuIoasMapFile(40, 7, 99, 9, 0, 4096, 0)
    assert env.call(I.IOMMU_IOAS_MAP_FILE, bad)[0] == -errno.ENOENT
    assert not env.ctx.ioases()[0].iopt.areas


def test_change_process_moves_the_accounting(env: Env) -> None:
    env.c.caps = frozenset()  # no CAP_IPC_LOCK: pinning charges RLIMIT_MEMLOCK
    i = env.ioas()
    env.mock_domain(i)
    _file(env, 9)
    env.ok(I.IOMMU_IOAS_MAP_FILE, I.IommuIoasMapFile(40, 7, i, 9, 0, 0x4000, START))
    old = env.c.mm
    assert old.locked_vm == 0x4000
    new = FakeCaller(caps=frozenset())
    new.fds = env.c.fds
    arg = new.alloc(I.IommuIoasChangeProcess(8, 0).pack())
    env.ctx.ioctl(new, I.IOMMU_IOAS_CHANGE_PROCESS, arg)
    assert (old.locked_vm, new.mm.locked_vm) == (0, 0x4000)
    # over the new process's RLIMIT_MEMLOCK: ENOMEM and nothing moves
    third = FakeCaller(caps=frozenset())
    third.mm.memlock = 4096
    arg = third.alloc(I.IommuIoasChangeProcess(8, 0).pack())
    assert err(env.ctx.ioctl, third, I.IOMMU_IOAS_CHANGE_PROCESS, arg) == -errno.ENOMEM
    assert new.mm.locked_vm == 0x4000
    # reserved, and a plain IOAS_MAP in the context: EINVAL
    arg = new.alloc(I.IommuIoasChangeProcess(8, 1).pack())
    assert (
        err(env.ctx.ioctl, new, I.IOMMU_IOAS_CHANGE_PROCESS, arg) == -errno.EOPNOTSUPP
    )
    env.map(i, START + MB, 4096)
    arg = new.alloc(I.IommuIoasChangeProcess(8, 0).pack())
    assert err(env.ctx.ioctl, new, I.IOMMU_IOAS_CHANGE_PROCESS, arg) == -errno.EINVAL
