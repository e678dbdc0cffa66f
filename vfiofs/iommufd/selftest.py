"""Mirror of drivers/iommu/iommufd/selftest.c: the kernel's mock IOMMU driver and
IOMMU_TEST_CMD.

`MockIommuDriver` is the IOMMU behind groups when the topology says ``iommu = "mock"``,
and behind the mock devices that IOMMU_TEST_OP_MOCK_DOMAIN creates: paging domains with
the mock aperture (MOCK_APERTURE_START..LAST) and 2 KiB IO pages, dirty tracking,
nested domains with a 4-entry mock IOTLB, a vIOMMU with vDEVICEs, device caches,
vEVENTs and HW queues, and PASIDs (MOCK_PASID_WIDTH bits). IOMMU_TEST_CMD is served when
the topology sets ``iommufd_test = true`` (CONFIG_IOMMUFD_TEST); elsewhere it is ENOTTY.

Where a check compares physical pages (MD_CHECK_MAP, MD_CHECK_REFS, ACCESS_PAGES), vfiofs
compares what it knows instead: the process memory and address an IOVA leads to, and the
pins it holds. A dma-buf (DMABUF_GET) is a buffer in the daemon served as one of our
files; docs/iommufd.md lists these differences.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

import attrs

from ..abi import iommufd as I, iommufd_test as T
from ..abi._cstruct import CStruct
from ..errors import KernelError
from ..ioctl_table import Ucmd
from ..iommu.domain import IommuDomain, NestedDomain
from ..iommu.driver import (
    ALLOC_PASID,
    DIRTY_TRACKING,
    IOMMU_CAP_CACHE_COHERENCY,
    IOMMU_CAP_DIRTY_TRACKING,
    NEST_PARENT,
    HwInfo,
    IommuDriver,
)
from ..iommu.group import IommuGroup
from ..iommu.mock_pagetable import MOCK_HUGE_PAGE_SIZE, MOCK_IO_PAGE_SIZE, MockPageTable
from ..iommu.pagetable import PageTable
from ..iommu.user_data import UserData, UserDataArray
from ..uaccess import PAGE_SIZE, OurFile
from .access import (
    iommufd_access_attach,
    iommufd_access_create,
    iommufd_access_destroy,
    iommufd_access_pin_pages,
    iommufd_access_replace,
    iommufd_access_rw,
    iommufd_access_unpin_pages,
)
from .device import (
    iommufd_device_attach,
    iommufd_device_bind,
    iommufd_device_detach,
    iommufd_device_unbind,
)
from .driver import (
    iommu_report_device_fault,
    iommufd_viommu_find_dev,
    iommufd_viommu_report_event,
)
from .io_pagetable import U64_MAX, IoPagetable, iopt_set_revoked
from .iommufd_private import (
    AccessOps,
    DmaBuf,
    DmaBufMemory,
    HwptNested,
    HwptPaging,
    Ioas,
    IommufdAccess,
    IommufdCtx,
    IommufdDevice,
    IommufdHwQueue,
    IommufdObject,
    IommufdTest,
    IommufdVdevice,
    IommufdViommu,
    IommufdViommuOps,
    IopfFault,
)

log = logging.getLogger("vfiofs.iommufd")

MOCK_APERTURE = (T.MOCK_APERTURE_START, T.MOCK_APERTURE_LAST)


# --- the mock IOMMU ---------------------------------------------------------------------


@attrs.define(eq=False)
class MockDomain(IommuDomain):
    """``struct mock_iommu_domain``: a paging domain over a `MockPageTable`."""

    huge: bool = False

    def make_pagetable(self) -> PageTable | None:
        return MockPageTable(MOCK_APERTURE, huge=self.huge)


@attrs.define(eq=False)
class MockNestedDomain(NestedDomain):
    """``struct mock_iommu_domain_nested``: a mock IOTLB the user invalidates."""

    iotlb: list[int] = attrs.Factory(lambda: [0] * T.MOCK_NESTED_DOMAIN_IOTLB_NUM)
    mock_viommu: IommufdViommu | None = None

    def cache_invalidate_user(self, array: UserDataArray) -> None:
        """mock_domain_cache_invalidate_user(): entry by entry, progress in ``done``."""
        if array.type != T.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST:
            raise KernelError(errno.EINVAL, f"data_type {array.type:#x}")
        for i in range(array.entry_num):
            inv = array.entry(T.IommuHwptInvalidateSelftest, i, "iotlb_id")
            if inv.flags & ~T.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                raise KernelError(errno.EOPNOTSUPP, f"flags {inv.flags:#x}")
            if inv.iotlb_id > T.MOCK_NESTED_DOMAIN_IOTLB_ID_MAX:
                raise KernelError(errno.EINVAL, f"iotlb_id {inv.iotlb_id}")
            if inv.flags & T.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                self.iotlb[:] = [0] * T.MOCK_NESTED_DOMAIN_IOTLB_NUM
            else:
                self.iotlb[inv.iotlb_id] = 0
            array.done += 1


@attrs.define(eq=False)
class MockDev:
    """``struct mock_dev``: a device on the mock bus, in a group of its own, bound to
    no host driver."""

    flags: int
    id: int
    group: IommuGroup
    driver: str = ""
    cache: list[int] = attrs.Factory(
        lambda: [T.IOMMU_TEST_DEV_CACHE_DEFAULT] * T.MOCK_DEV_CACHE_NUM
    )
    viommu: IommufdViommu | None = None
    vdev_id: int = 0
    pasid_1024_fake_error: bool = False


def _no_dirty(dev: object) -> bool:
    return isinstance(dev, MockDev) and bool(dev.flags & T.MOCK_FLAGS_DEVICE_NO_DIRTY)


class MockIommuDriver(IommuDriver):
    """``mock_ops``: the selftest IOMMU."""

    name = "mock"

    def __init__(self, address_width: int = 48) -> None:
        super().__init__(address_width)
        self.next_dev_id = 0

    def domain_alloc_paging_flags(
        self, dev: object, flags: int, user_data: UserData | None
    ) -> IommuDomain:
        paging_flags = DIRTY_TRACKING | NEST_PARENT | ALLOC_PASID
        if flags & ~paging_flags or (flags & DIRTY_TRACKING and _no_dirty(dev)):
            raise KernelError(errno.EOPNOTSUPP, f"flags {flags:#x}")
        huge = False
        if user_data is not None:
            if user_data.type != T.IOMMU_HWPT_DATA_SELFTEST:
                raise KernelError(errno.EOPNOTSUPP, f"data_type {user_data.type:#x}")
            cfg = user_data.copy(T.IommuHwptSelftest, "pagetable_type")
            if cfg.pagetable_type not in (T.MOCK_IOMMUPT_DEFAULT, T.MOCK_IOMMUPT_HUGE):
                raise KernelError(errno.EINVAL, f"pagetable_type {cfg.pagetable_type}")
            huge = cfg.pagetable_type == T.MOCK_IOMMUPT_HUGE
        return MockDomain(
            self.address_width,
            pgsize_bitmap=MOCK_IO_PAGE_SIZE | (MOCK_HUGE_PAGE_SIZE if huge else 0),
            aperture=MOCK_APERTURE,
            owner=self,
            nest_parent=bool(flags & NEST_PARENT),
            dirty_ops=bool(flags & DIRTY_TRACKING),
            huge=huge,
        )

    def nested(
        self, parent: IommuDomain, user_data: UserData | None
    ) -> MockNestedDomain:
        """__mock_domain_alloc_nested()."""
        if user_data is None or user_data.type != T.IOMMU_HWPT_DATA_SELFTEST:
            raise KernelError(errno.EOPNOTSUPP, "data_type")
        cfg = user_data.copy(T.IommuHwptSelftest, "iotlb")
        return MockNestedDomain(
            owner=self,
            parent=parent,
            iotlb=[cfg.iotlb] * T.MOCK_NESTED_DOMAIN_IOTLB_NUM,
        )

    def domain_alloc_nested(
        self, dev: object, parent: IommuDomain, flags: int, user_data: UserData | None
    ) -> IommuDomain:
        if flags:
            raise KernelError(errno.EOPNOTSUPP, f"flags {flags:#x}")
        if not isinstance(parent, MockDomain):
            raise KernelError(errno.EINVAL, "parent is not a mock domain")
        return self.nested(parent, user_data)

    def capable(self, dev: object, cap: int) -> bool:
        if cap == IOMMU_CAP_CACHE_COHERENCY:
            return True
        if cap == IOMMU_CAP_DIRTY_TRACKING:
            return not _no_dirty(dev)
        return False

    def hw_info(self, dev: object, in_type: int | None) -> HwInfo:
        if in_type not in (
            None,
            I.IOMMU_HW_INFO_TYPE_DEFAULT,
            T.IOMMU_HW_INFO_TYPE_SELFTEST,
        ):
            raise KernelError(errno.EOPNOTSUPP, f"hw info type {in_type:#x}")
        data = T.IommuTestHwInfo(0, T.IOMMU_HW_INFO_SELFTEST_REGVAL).pack()
        return HwInfo(T.IOMMU_HW_INFO_TYPE_SELFTEST, data, 0, self.max_pasid_log2(dev))

    def max_pasid_log2(self, dev: object) -> int:
        if isinstance(dev, MockDev):
            return T.MOCK_PASID_WIDTH if dev.flags & T.MOCK_FLAGS_DEVICE_PASID else 0
        return super().max_pasid_log2(dev)

    def attach_dev(self, domain: IommuDomain, dev: object) -> None:
        """mock_domain_nop_attach(): a NO_DIRTY device refuses a dirty domain."""
        super().attach_dev(domain, dev)
        if domain.dirty_ops and _no_dirty(dev):
            raise KernelError(errno.EINVAL, "the device cannot do dirty tracking")

    def set_dev_pasid(
        self,
        domain: IommuDomain | None,
        dev: object,
        pasid: int,
        old: IommuDomain | None,
    ) -> None:
        """mock_domain_set_dev_pasid_nop(): PASID 1024 fails every second change, so
        tests can see the core roll a replace back."""
        super().set_dev_pasid(domain, dev, pasid, old)
        if not isinstance(dev, MockDev) or pasid != T.IOMMU_TEST_PASID_RESERVED:
            return
        if domain is None:
            dev.pasid_1024_fake_error = False
        elif dev.pasid_1024_fake_error:
            dev.pasid_1024_fake_error = False
            raise KernelError(errno.ENOMEM, "fake error for PASID 1024")
        else:
            dev.pasid_1024_fake_error = True

    def get_viommu_size(self, dev: object, viommu_type: int) -> int:
        return 1 if viommu_type == T.IOMMU_VIOMMU_TYPE_SELFTEST else 0

    def viommu_init(
        self, viommu: object, parent: IommuDomain, user_data: UserData | None
    ) -> None:
        if not isinstance(parent, MockDomain):
            raise KernelError(errno.EINVAL, "parent is not a mock domain")
        assert isinstance(viommu, IommufdViommu)
        viommu.ops = MockViommuOps(self, parent)
        if user_data is not None:
            data: Any = user_data.copy(T.IommuViommuSelftest, "out_data")
            # no mmap window: /dev/iommu is not mmappable through vfiofs
            user_data.copy_back(attrs.evolve(data, out_data=data.in_data))

    def new_dev(self, flags: int) -> MockDev:
        """mock_dev_create(): EINVAL for unknown flags."""
        if flags & ~(T.MOCK_FLAGS_DEVICE_NO_DIRTY | T.MOCK_FLAGS_DEVICE_PASID):
            raise KernelError(errno.EINVAL, f"dev_flags {flags:#x}")
        group = IommuGroup(-1 - self.next_dev_id, driver=self)
        group.reserved_regions.clear()  # the mock bus has no MSI window
        dev = MockDev(flags, self.next_dev_id, group)
        self.next_dev_id += 1
        group.devices.append(dev)
        return dev


class MockViommuOps(IommufdViommuOps):
    """``mock_viommu_ops`` of one mock vIOMMU."""

    def __init__(self, driver: MockIommuDriver, s2_parent: MockDomain) -> None:
        self.driver, self.s2_parent = driver, s2_parent
        self.hw_queue: list[IommufdHwQueue | None] = [None] * T.IOMMU_TEST_HW_QUEUE_MAX

    def alloc_domain_nested(
        self, viommu: IommufdViommu, flags: int, user_data: UserData | None
    ) -> IommuDomain:
        if flags & ~I.IOMMU_HWPT_FAULT_ID_VALID:
            raise KernelError(errno.EOPNOTSUPP, f"flags {flags:#x}")
        domain = self.driver.nested(self.s2_parent, user_data)
        domain.mock_viommu = viommu
        return domain

    def cache_invalidate(self, viommu: IommufdViommu, array: UserDataArray) -> None:
        """mock_viommu_cache_invalidate(): the whole array is read first, then each
        entry invalidates a device cache of the device behind ``vdev_id``."""
        if (
            array.entry_num == 0
            and array.type == T.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST
        ):
            return
        if array.type != T.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST or not array.entry_num:
            raise KernelError(errno.EINVAL, f"data_type {array.type:#x}")
        cmds = [
            array.entry(T.IommuViommuInvalidateSelftest, i, "cache_id")
            for i in range(array.entry_num)
        ]
        for cur in cmds:
            if cur.flags & ~T.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                raise KernelError(errno.EOPNOTSUPP, f"flags {cur.flags:#x}")
            if cur.cache_id > T.MOCK_DEV_CACHE_ID_MAX:
                raise KernelError(errno.EINVAL, f"cache_id {cur.cache_id}")
            idev = iommufd_viommu_find_dev(viommu, cur.vdev_id)
            dev = idev.dev if idev is not None else None
            if not isinstance(dev, MockDev):
                raise KernelError(errno.EINVAL, f"no vDEVICE {cur.vdev_id:#x}")
            if cur.flags & T.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                dev.cache[:] = [0] * T.MOCK_DEV_CACHE_NUM
            else:
                dev.cache[cur.cache_id] = 0
            array.done += 1

    def vdevice_init(self, vdev: IommufdVdevice) -> None:
        dev = vdev.idev.dev if vdev.idev is not None else None
        if isinstance(dev, MockDev):
            dev.viommu, dev.vdev_id = vdev.viommu, vdev.virt_id

    def vdevice_destroy(self, vdev: IommufdVdevice) -> None:
        dev = vdev.idev.dev if vdev.idev is not None else None
        if isinstance(dev, MockDev):
            dev.viommu, dev.vdev_id = None, 0

    def get_hw_queue_size(self, viommu: IommufdViommu, queue_type: int) -> int:
        return 1 if queue_type == T.IOMMU_HW_QUEUE_TYPE_SELFTEST else 0

    def hw_queue_init_phys(
        self, hw_queue: IommufdHwQueue, index: int, base: tuple[object, int]
    ) -> None:
        """mock_hw_queue_init_phys(): queues fill from index 0 up, each holding the
        previous one; the base must be what the parent domain translates it to."""
        if index >= T.IOMMU_TEST_HW_QUEUE_MAX:
            raise KernelError(errno.EINVAL, f"index {index}")
        if self.hw_queue[index] is not None:
            raise KernelError(errno.EEXIST, f"HW queue {index} exists")
        prev = self.hw_queue[index - 1] if index else None
        if index and prev is None:
            raise KernelError(errno.EIO, f"HW queue {index - 1} is missing")
        t = self.s2_parent.translate(hw_queue.base_addr)
        if t is None or (t.owner, t.vaddr) != base:
            raise KernelError(errno.EFAULT, "base address translates elsewhere")
        if prev is not None:
            prev.users += 1
        self.hw_queue[index] = hw_queue

        def destroy(q: IommufdHwQueue) -> None:
            self.hw_queue[index] = None
            if prev is not None:
                prev.users -= 1

        hw_queue.on_destroy = destroy


# --- selftest objects --------------------------------------------------------------------


@attrs.define(eq=False)
class SelftestObj(IommufdObject):
    """``struct selftest_obj`` (TYPE_IDEV): a mock device bound into the context, its
    DEVICE held the way a driver holds one."""

    idev: IommufdDevice | None = None
    mock_dev: MockDev | None = None

    def destroy(self) -> None:
        idev, self.idev = self.idev, None
        if idev is not None:
            iommufd_device_unbind(idev)


@attrs.define(eq=False)
class StAccessItem:
    iova: int
    length: int
    id: int


@attrs.define(eq=False)
class StAccessFile:
    """``struct selftest_access``: the fd CREATE_ACCESS returns, holding an access."""

    access: IommufdAccess | None = None
    items: list[StAccessItem] = attrs.Factory(list)
    next_id: int = 0

    def unmap(self, iova: int, length: int) -> None:
        """iommufd_test_access_unmap(): unpin every item the range meets."""
        last = iova + length - 1
        for item in list(self.items):
            if iova > item.iova + item.length - 1 or last < item.iova:
                continue
            self.items.remove(item)
            if self.access is not None:
                iommufd_access_unpin_pages(self.access, item.iova, item.length)

    def release(self) -> None:
        """The access fd's last close: unpin, destroy the access, drop the context
        reference the access held (iommufd_access_create takes one)."""
        access = self.access
        if access is not None:
            self.unmap(0, U64_MAX)
            self.access = None
            iommufd_access_destroy(access)
            access.ictx.file_closed()


# --- IOMMU_TEST_CMD ------------------------------------------------------------------------


def _payload(ucmd: Ucmd, st: type[CStruct]) -> Any:
    """This op's member of the command's union."""
    return st.unpack_from(ucmd.cmd.payload)


def _test(ictx: IommufdCtx) -> IommufdTest:
    """The daemon's CONFIG_IOMMUFD_TEST state (the command is served only with it)."""
    assert ictx.test is not None
    return ictx.test


def _respond(ucmd: Ucmd, st: CStruct) -> None:
    data = st.pack().ljust(T.PAYLOAD, b"\0")
    ucmd.respond(attrs.evolve(ucmd.cmd, payload=data))


def _mock_pt(ictx: IommufdCtx, hwpt_id: int) -> HwptPaging:
    """get_md_pagetable(): ENOENT, or EINVAL for a HWPT that is not a mock domain."""
    hwpt = ictx.get(hwpt_id, HwptPaging)
    if not isinstance(hwpt.domain, MockDomain):
        raise KernelError(errno.EINVAL, f"HWPT {hwpt_id} is not a mock domain")
    return hwpt


def _staccess(ucmd: Ucmd, fd: int) -> StAccessFile:
    """iommufd_access_get(): the access behind the caller's fd; EBADFD otherwise,
    also for a closed fd (the kernel answers a failed fget with EBADFD here)."""
    try:
        ref = ucmd.caller.fget(fd)
    except KernelError:
        raise KernelError(errno.EBADFD, f"fd {fd} is not open") from None
    if not isinstance(ref, OurFile) or not isinstance(ref.handle, StAccessFile):
        raise KernelError(errno.EBADFD, f"fd {fd} is not a selftest access")
    if ref.handle.access is None:
        raise KernelError(errno.EBADFD, "access not set up")
    return ref.handle


def _syz_iova(iopt: IoPagetable, iova: int) -> int:
    """__iommufd_test_syz_conv_iova(): (nth area, offset) packed in the IOVA."""
    nth, offset = iova & 0xFFFFFFFF, iova >> 32
    if nth < len(iopt.areas):
        return int(iopt.areas[nth].iova) + offset
    return 0


def test_add_reserved(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    a = _payload(ucmd, T.AddReserved)
    ioas = ictx.get(ucmd.cmd.id, Ioas)
    if not a.length:
        return 0
    # iopt_reserve_iova() with no owner: EADDRINUSE over a mapping or allowed range
    ioas.iopt.reserve(None, [(a.start, min(a.start + a.length - 1, U64_MAX))])
    return 0


def test_mock_domain(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    """MOCK_DOMAIN(_FLAGS): a mock device, bound and attached to ``id`` (an IOAS or
    HWPT); the selftest object's id comes first, as the kernel allocates it first."""
    c = ucmd.cmd
    flags = 0
    if c.op == T.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS:
        flags = _payload(ucmd, T.MockDomainFlags).dev_flags
    sobj = SelftestObj(ictx)
    ictx.add(sobj)
    try:
        mock = _test(ictx).mock
        assert isinstance(mock, MockIommuDriver)
        mdev = mock.new_dev(flags)
        idev = iommufd_device_bind(ictx, mdev.group, mdev)
        sobj.idev, sobj.mock_dev = idev, mdev
        hwpt_id = iommufd_device_attach(idev, c.id, mode="attach")
    except BaseException:
        ictx.remove(sobj)
        raise
    out = T.MockDomainFlags(sobj.id, hwpt_id, idev.id, flags)
    _respond(ucmd, out)
    return 0


def _sobj(ictx: IommufdCtx, stdev_id: int) -> SelftestObj:
    sobj = ictx.get(stdev_id, SelftestObj)
    if sobj.idev is None:
        raise KernelError(errno.EINVAL, "not a mock device")
    return sobj


def test_mock_domain_replace(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    r = _payload(ucmd, T.MockDomainReplace)
    sobj = _sobj(ictx, ucmd.cmd.id)
    assert sobj.idev is not None
    pt = iommufd_device_attach(sobj.idev, r.pt_id, mode="replace")
    _respond(ucmd, T.MockDomainReplace(pt))
    return 0


def test_md_check_map(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    m = _payload(ucmd, T.CheckMap)
    if (
        m.iova % MOCK_IO_PAGE_SIZE
        or m.length % MOCK_IO_PAGE_SIZE
        or m.uptr % MOCK_IO_PAGE_SIZE
        or m.uptr + m.length > U64_MAX
    ):
        raise KernelError(errno.EINVAL, "alignment or overflow")
    hwpt = _mock_pt(ictx, ucmd.cmd.id)
    caller = ucmd.caller
    for off in range(0, m.length, MOCK_IO_PAGE_SIZE):
        caller.mm.check_range(m.uptr + off, 1, write=False)  # get_user_pages: EFAULT
        t = hwpt.domain.translate(m.iova + off)
        if (
            t is None
            or getattr(t.owner, "tgid", None) != caller.tgid
            or t.vaddr != m.uptr + off
        ):
            raise KernelError(errno.EINVAL, f"IOVA {m.iova + off:#x} maps elsewhere")
    return 0


def test_md_check_refs(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    """The pin count of each page: areas of this context's IOASes over it that are
    pinned (the IOAS has a domain, or an access pins the area)."""
    r = _payload(ucmd, T.CheckRefs)
    if r.length % PAGE_SIZE or r.uptr % PAGE_SIZE or r.uptr + r.length > U64_MAX:
        raise KernelError(errno.EINVAL, "alignment or overflow")
    caller = ucmd.caller
    areas = [
        a
        for o in ictx.ioases()
        for a in o.iopt.areas
        if (o.iopt.domains or a.num_accesses)
        and getattr(a.mm, "tgid", None) == caller.tgid
        and a.file is None
    ]
    for va in range(r.uptr, r.uptr + r.length, PAGE_SIZE):
        caller.mm.check_range(va, 1, write=False)
        refs = sum(1 for a in areas if a.user_va <= va < a.user_va + a.length)
        if refs != r.refs:
            raise KernelError(errno.EIO, f"page {va:#x} has {refs} pins")
    return 0


def _check_entry(entries: list[int], index: int, want: int, what: str) -> None:
    """A mock IOTLB or device-cache entry holds ``want``: EINVAL otherwise, also for an
    index past the last entry."""
    if index >= len(entries) or entries[index] != want:
        raise KernelError(errno.EINVAL, f"{what}[{index}] is not {want:#x}")


def test_md_check_iotlb(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    chk = _payload(ucmd, T.CheckIotlb)
    d = ictx.get(ucmd.cmd.id, HwptNested).domain
    if not isinstance(d, MockNestedDomain):
        raise KernelError(errno.EINVAL, "not a mock nested domain")
    _check_entry(d.iotlb, chk.id, chk.iotlb, "iotlb")
    return 0


def test_dev_check_cache(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    chk = _payload(ucmd, T.CheckDevCache)
    dev = ictx.get(ucmd.cmd.id, IommufdDevice).dev
    if not isinstance(dev, MockDev):
        raise KernelError(errno.EINVAL, "not a mock device")
    _check_entry(dev.cache, chk.id, chk.cache, "cache")
    return 0


def test_create_access(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    a = _payload(ucmd, T.CreateAccess)
    if a.flags & ~T.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES:
        raise KernelError(errno.EOPNOTSUPP, f"flags {a.flags:#x}")
    staccess = StAccessFile()
    ops = AccessOps(
        needs_pin_pages=bool(a.flags & T.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES),
        unmap=staccess.unmap,
    )
    access = iommufd_access_create(ictx, ops)
    try:
        iommufd_access_attach(access, ucmd.cmd.id)
        staccess.access = access
        _respond(ucmd, T.CreateAccess(0, a.flags))
        ucmd.caller.install_fd(staccess, ucmd.arg + T.PAYLOAD_OFFSET)
    except BaseException:
        staccess.access = None
        iommufd_access_destroy(access)
        raise
    ictx.file_opened()  # the access keeps the context until its fd closes
    return 0


def test_access_replace_ioas(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    r = _payload(ucmd, T.AccessReplaceIoas)
    st = _staccess(ucmd, ucmd.cmd.id)
    assert st.access is not None
    iommufd_access_replace(st.access, r.ioas_id)
    return 0


def test_access_pages(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    p = _payload(ucmd, T.AccessPages)
    if p.length > 16 << 20:
        raise KernelError(errno.ENOMEM, "length")
    if p.flags & ~(T.MOCK_FLAGS_ACCESS_WRITE | T.MOCK_FLAGS_ACCESS_SYZ):
        raise KernelError(errno.EOPNOTSUPP, f"flags {p.flags:#x}")
    st = _staccess(ucmd, ucmd.cmd.id)
    access = st.access
    assert access is not None
    if not access.ops.needs_pin_pages:
        raise KernelError(errno.EOPNOTSUPP, "the access was made without pin pages")
    iova = p.iova
    if p.flags & T.MOCK_FLAGS_ACCESS_SYZ and access.ioas is not None:
        iova = _syz_iova(access.ioas.iopt, iova)
    if not p.length:
        raise KernelError(errno.EINVAL, "length 0")
    if iova + p.length - 1 > U64_MAX:
        raise KernelError(errno.EOVERFLOW, "iova + length")
    pieces = iommufd_access_pin_pages(
        access, iova, p.length, write=bool(p.flags & T.MOCK_FLAGS_ACCESS_WRITE)
    )
    if p.uptr:
        # iommufd_test_check_pages(): the pinned pages are the user's at uptr
        va = p.uptr
        for mm, addr, n in pieces:
            if getattr(mm, "tgid", None) != ucmd.caller.tgid or addr != va:
                iommufd_access_unpin_pages(access, iova, p.length)
                raise KernelError(errno.EBADE, "pinned pages are not at uptr")
            va += n
    item = StAccessItem(iova, p.length, st.next_id)
    st.next_id += 1
    st.items.append(item)
    _respond(ucmd, attrs.evolve(p, out_access_pages_id=item.id))
    return 0


def test_access_rw(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    a = _payload(ucmd, T.AccessRw)
    if a.length > 16 << 20:
        raise KernelError(errno.ENOMEM, "length")
    ok = T.MOCK_ACCESS_RW_WRITE | T.MOCK_ACCESS_RW_SLOW_PATH | T.MOCK_FLAGS_ACCESS_SYZ
    if a.flags & ~ok:
        raise KernelError(errno.EOPNOTSUPP, f"flags {a.flags:#x}")
    st = _staccess(ucmd, ucmd.cmd.id)
    access = st.access
    assert access is not None
    iova = a.iova
    if a.flags & T.MOCK_FLAGS_ACCESS_SYZ and access.ioas is not None:
        iova = _syz_iova(access.ioas.iopt, iova)
    if not a.length:
        raise KernelError(errno.EINVAL, "length 0")
    if iova + a.length - 1 > U64_MAX:
        raise KernelError(errno.EOVERFLOW, "iova + length")
    if a.flags & T.MOCK_ACCESS_RW_WRITE:
        data = ucmd.caller.copy_from_user(a.uptr, a.length)
        iommufd_access_rw(access, iova, data, a.flags & T.MOCK_ACCESS_RW_WRITE)
    else:
        out = iommufd_access_rw(access, iova, a.length, 0)
        ucmd.caller.copy_to_user(a.uptr, out)
    return 0


def test_destroy_access_pages(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    d = _payload(ucmd, T.DestroyAccessPages)
    st = _staccess(ucmd, ucmd.cmd.id)
    for item in st.items:
        if item.id == d.access_pages_id:
            st.items.remove(item)
            assert st.access is not None
            iommufd_access_unpin_pages(st.access, item.iova, item.length)
            return 0
    raise KernelError(errno.ENOENT, f"no access pages {d.access_pages_id}")


def test_set_temp_memory_limit(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    m = _payload(ucmd, T.MemoryLimit)
    if m.limit < 8 + 4:  # _batch_init() needs room for one element
        raise KernelError(errno.EINVAL, f"limit {m.limit}")
    _test(ictx).memory_limit = m.limit
    return 0


def test_dirty(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    """DIRTY: mark the IO pages under each set bit of the user's bitmap dirty, as if
    the hardware wrote them; out_nr_dirty counts the bits that hit a mapping."""
    d = _payload(ucmd, T.Dirty)
    if (
        not d.page_size
        or not d.length
        or d.iova % d.page_size
        or d.length % d.page_size
        or not d.uptr
    ):
        raise KernelError(errno.EINVAL, "page_size, length, alignment or uptr")
    hwpt = _mock_pt(ictx, ucmd.cmd.id)
    domain = hwpt.domain
    if not domain.dirty_tracking:
        raise KernelError(errno.EINVAL, "dirty tracking is off")
    nbits = d.length // d.page_size
    bitmap = int.from_bytes(
        ucmd.caller.copy_from_user(d.uptr, (nbits + 7) // 8), "little"
    )
    pt = domain.pagetable
    assert isinstance(pt, MockPageTable)  # _mock_pt: a mock domain
    count = 0
    for i in range(nbits):
        if not bitmap >> i & 1:
            continue
        cur = d.iova + i * d.page_size
        hit = False
        for a in range(
            cur - cur % MOCK_IO_PAGE_SIZE, cur + d.page_size, MOCK_IO_PAGE_SIZE
        ):
            hit = pt.set_dirty_page(a) or hit
        count += hit
    _respond(ucmd, attrs.evolve(d, out_nr_dirty=count))
    return 0


def test_trigger_iopf(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    t = _payload(ucmd, T.TriggerIopf)
    idev = ictx.get(t.dev_id, IommufdDevice)
    flags = I.IOMMU_PGFAULT_FLAGS_LAST_PAGE
    if t.pasid:
        flags |= I.IOMMU_PGFAULT_FLAGS_PASID_VALID
    iommu_report_device_fault(
        idev, t.pasid, IopfFault(flags, t.pasid, t.grpid, t.perm, t.addr)
    )
    return 0


def test_trigger_vevent(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    t = _payload(ucmd, T.TriggerVevent)
    idev = ictx.get(t.dev_id, IommufdDevice)
    dev = idev.dev
    if not isinstance(dev, MockDev) or dev.viommu is None:
        raise KernelError(errno.ENOENT, "the device has no vDEVICE")
    event = T.IommuViommuEventSelftest(dev.vdev_id & 0xFFFFFFFF).pack()
    iommufd_viommu_report_event(dev.viommu, T.IOMMU_VEVENTQ_TYPE_SELFTEST, event)
    return 0


def test_pasid_attach(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    p = _payload(ucmd, T.PasidAttach)
    sobj = _sobj(ictx, ucmd.cmd.id)
    assert sobj.idev is not None
    if ucmd.cmd.op == T.IOMMU_TEST_OP_PASID_ATTACH:
        pt = iommufd_device_attach(sobj.idev, p.pt_id, p.pasid, mode="attach")
    else:
        pt = iommufd_device_attach(sobj.idev, p.pt_id, p.pasid, mode="replace")
    _respond(ucmd, T.PasidAttach(p.pasid, pt))
    return 0


def test_pasid_detach(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    p = _payload(ucmd, T.PasidDetach)
    sobj = _sobj(ictx, ucmd.cmd.id)
    assert sobj.idev is not None
    iommufd_device_detach(sobj.idev, p.pasid)
    return 0


def test_pasid_check_hwpt(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    p = _payload(ucmd, T.PasidCheck)
    sobj = _sobj(ictx, ucmd.cmd.id)
    assert sobj.idev is not None
    attached = sobj.idev.attached.get(p.pasid)
    if not p.hwpt_id:  # 0: the PASID must be detached
        if attached is not None:
            raise KernelError(errno.EINVAL, f"PASID {p.pasid} is attached")
        return 0
    hwpt = ictx.objects.get(p.hwpt_id)
    if not isinstance(hwpt, HwptPaging | HwptNested):
        raise KernelError(errno.ENOENT, f"no HWPT {p.hwpt_id}")
    if attached is None or attached.domain is not hwpt.domain:
        raise KernelError(errno.EINVAL, f"PASID {p.pasid} is not on HWPT {p.hwpt_id}")
    return 0


def test_dmabuf_get(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    """A dma-buf of ``length`` bytes (page-aligned up, at most 512 pages); its fd is
    the ioctl's return value."""
    g = _payload(ucmd, T.DmabufGet)
    length = (g.length + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
    if length == 0 or length > 512 * PAGE_SIZE:
        raise KernelError(errno.EINVAL, f"length {g.length}")
    o_cloexec = 0o2000000
    if g.open_flags & ~(o_cloexec | 0o2):  # dma_buf_fd(): O_CLOEXEC, O_RDWR
        raise KernelError(errno.EINVAL, f"open_flags {g.open_flags:#o}")
    mem = DmaBufMemory(length, tgid=ucmd.caller.tgid)
    return ucmd.caller.install_fd(DmaBuf(mem), None)


def test_dmabuf_revoke(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    """Revoke (or restore) a dma-buf: DMA through its mappings faults while revoked."""
    r = _payload(ucmd, T.DmabufRevoke)
    ref = ucmd.caller.fget(r.dmabuf_fd)
    if not isinstance(ref, OurFile) or not isinstance(ref.handle, DmaBuf):
        raise KernelError(errno.EBADFD, f"fd {r.dmabuf_fd} is not a test dma-buf")
    mem = ref.handle.mem
    revoked = bool(r.revoked)
    if mem.revoked == revoked:
        return 0
    mem.revoked = revoked
    for ioas in ictx.ioases():
        iopt_set_revoked(ioas.iopt, mem, revoked)
    return 0


_OPS = {
    T.IOMMU_TEST_OP_ADD_RESERVED: test_add_reserved,
    T.IOMMU_TEST_OP_MOCK_DOMAIN: test_mock_domain,
    T.IOMMU_TEST_OP_MD_CHECK_MAP: test_md_check_map,
    T.IOMMU_TEST_OP_MD_CHECK_REFS: test_md_check_refs,
    T.IOMMU_TEST_OP_CREATE_ACCESS: test_create_access,
    T.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: test_destroy_access_pages,
    T.IOMMU_TEST_OP_ACCESS_PAGES: test_access_pages,
    T.IOMMU_TEST_OP_ACCESS_RW: test_access_rw,
    T.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: test_set_temp_memory_limit,
    T.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: test_mock_domain_replace,
    T.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: test_access_replace_ioas,
    T.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: test_mock_domain,
    T.IOMMU_TEST_OP_DIRTY: test_dirty,
    T.IOMMU_TEST_OP_MD_CHECK_IOTLB: test_md_check_iotlb,
    T.IOMMU_TEST_OP_TRIGGER_IOPF: test_trigger_iopf,
    T.IOMMU_TEST_OP_DEV_CHECK_CACHE: test_dev_check_cache,
    T.IOMMU_TEST_OP_TRIGGER_VEVENT: test_trigger_vevent,
    T.IOMMU_TEST_OP_PASID_ATTACH: test_pasid_attach,
    T.IOMMU_TEST_OP_PASID_REPLACE: test_pasid_attach,
    T.IOMMU_TEST_OP_PASID_DETACH: test_pasid_detach,
    T.IOMMU_TEST_OP_PASID_CHECK_HWPT: test_pasid_check_hwpt,
    T.IOMMU_TEST_OP_DMABUF_GET: test_dmabuf_get,
    T.IOMMU_TEST_OP_DMABUF_REVOKE: test_dmabuf_revoke,
}
TEST_OPS = _OPS  # for the docs test: every op of iommufd_test.h has a handler


def iommufd_test(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    """iommufd_test(): dispatch on ``op``; EOPNOTSUPP for an unknown one."""
    handler = _OPS.get(ucmd.cmd.op)
    if handler is None:
        raise KernelError(errno.EOPNOTSUPP, f"test op {ucmd.cmd.op}")
    return handler(ictx, ucmd)
