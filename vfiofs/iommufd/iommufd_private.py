"""Mirror of drivers/iommu/iommufd/iommufd_private.h: the structs of iommufd and the
functions more than one of its files use.

`IommufdCtx` is an open /dev/iommu (``struct iommufd_ctx``): its object table, the
compat IOAS, and the `FileOperations` main.py opened it with. The objects are `Ioas`,
the HWPTs (`HwptPaging`, `HwptNested`), `IommufdDevice`, `IommufdAccess`, the event
queues (`IommufdFault`, `IommufdVeventq`) and the vIOMMU objects (`IommufdViommu`,
`IommufdVdevice`, `IommufdHwQueue`, which the kernel keeps in include/linux/iommufd.h
for drivers).

Each struct carries its own teardown (``destroy``), since destroying one object lets go
of others; so what teardown needs lives here too: detaching a device from its HWPT
(`iommufd_hw_pagetable_detach`), answering page requests (`iopf_group_response`,
`iommufd_auto_response_faults`), unpinning an access. The functions several files call
are here as well: `iommufd_hwpt_paging_alloc` (HWPT_ALLOC and device attach),
`iommufd_fault_iopf_handler` (a device faults; the selftest triggers one).

Every iommufd module imports this header (and io_pagetable.py below it). The API
modules that other subsystems and drivers call (device.py, access.py, driver.py, as in
include/linux/iommufd.h) sit above it; the ioctl handler modules import those and the
header, never each other; main.py, which holds the ioctl table, imports the handlers.
pyproject.toml's import-linter contract ``iommufd-files`` keeps that order.
"""

from __future__ import annotations

import errno
import logging
from collections import deque
from collections.abc import Callable
from typing import TypeVar

import attrs

from ..abi import iommufd as I
from ..abi.iommufd_test import IOMMU_TEST_CMD
from ..errors import KernelError
from ..idr import ida_alloc_min
from ..ioctl_table import FileOperations
from ..iommu.domain import IommuDomain
from ..iommu.driver import IOMMU_CAP_DIRTY_TRACKING, IommuDriver
from ..iommu.group import IommuGroup
from ..iommu.user_data import UserData, UserDataArray
from ..uaccess import PAGE_SIZE, Caller
from ..waitqueue import WaitQueue
from .io_pagetable import Area, IoPagetable

log = logging.getLogger("vfiofs.iommufd")

T = TypeVar("T")
IOMMU_NO_PASID = 0
INT_MAX = (1 << 31) - 1


@attrs.define(eq=False)
class IommufdObject:
    """``struct iommufd_object``: the base of every object in a context's table.
    ``users`` counts references from other objects, files and drivers: a referenced
    object cannot be destroyed (EBUSY)."""

    ictx: IommufdCtx
    id: int = 0
    users: int = 0

    def busy(self) -> bool:
        """Whether something still holds the object (DESTROY says EBUSY)."""
        return self.users > 0

    def destroy(self) -> None:
        """Free what the object holds (called once, when it leaves the table)."""


@attrs.define(eq=False)
class IommufdTest:
    """What CONFIG_IOMMUFD_TEST keeps globally (per daemon here), shared by every
    /dev/iommu open: the mock IOMMU that IOMMU_TEST_OP_MOCK_DOMAIN puts devices behind,
    and ``iommufd_test_memory_limit`` (SET_TEMP_MEMORY_LIMIT)."""

    mock: IommuDriver
    memory_limit: int = 65536


@attrs.define(eq=False)
class IommufdCtx:
    """``struct iommufd_ctx``: an open /dev/iommu (or /dev/vfio/vfio served by iommufd).

    Object ids are the lowest free id from 1, reused after destroy. Files that hold the
    context (bound device fds, event queue fds, selftest access fds) count in
    ``files``: it lives until the last of them closes (``iommufd_ctx_get``).
    """

    fops: FileOperations[IommufdCtx]
    address_width: int = 48
    account_mm: bool = False  # IOMMU_OPTION_RLIMIT_MODE: 1 = per process (VFIO-like)
    objects: dict[int, IommufdObject] = attrs.Factory(dict)
    compat_ioas: Ioas | None = None  # the IOAS the VFIO compat layer uses (vfio_ioas)
    compat_type: int = 0  # SET_IOMMU's type, 0 before
    no_iommu_mode: bool = False
    closed: bool = False
    files: int = 0
    test: IommufdTest | None = None  # IOMMU_TEST_CMD is served (else ENOTTY)

    # --- objects -------------------------------------------------------------------------

    def add(self, obj: IommufdObject) -> int:
        """``iommufd_object_alloc`` + finalize: the lowest free id from 1."""
        obj.id = ida_alloc_min(self.objects, 1)
        self.objects[obj.id] = obj
        return obj.id

    def get(self, obj_id: int, kind: type[T]) -> T:
        """``iommufd_get_object``: ENOENT for a missing id or the wrong type."""
        obj = self.objects.get(obj_id)
        if not isinstance(obj, kind):
            raise KernelError(errno.ENOENT, f"no {kind.__name__} with id {obj_id}")
        return obj

    def remove(self, obj: IommufdObject) -> None:
        if self.objects.get(obj.id) is obj:
            del self.objects[obj.id]
            obj.destroy()

    def ioases(self) -> list[Ioas]:
        return [o for o in self.objects.values() if isinstance(o, Ioas)]

    # --- file operations -------------------------------------------------------------------

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        return self.fops.unlocked_ioctl(self, caller, cmd, arg)

    def ioctl_name(self, cmd: int) -> str | None:
        return self.fops.ioctl_name(self, cmd)

    def ioctl_creates_fd(self, cmd: int) -> bool:
        """Whether ``cmd`` may hand the caller a new fd (``Caller.install_fd``): the
        queue allocations, and IOMMU_TEST_CMD (CREATE_ACCESS, DMABUF_GET) where served.
        `vfiofs run` serves these itself, since a FUSE reply cannot create an fd."""
        if cmd in (I.IOMMU_FAULT_QUEUE_ALLOC, I.IOMMU_VEVENTQ_ALLOC):
            return True
        return cmd == IOMMU_TEST_CMD and self.test is not None

    def release(self) -> None:
        """Close: destroy every object, leaves first. Files that hold the context keep
        it alive until they close (then `file_closed` finishes the job)."""
        self.closed = True
        self._destroy_unreferenced()

    def file_opened(self) -> None:
        """A file takes a reference on the context (``iommufd_ctx_get``)."""
        self.files += 1

    def file_closed(self) -> None:
        """Such a file let go of the context (``iommufd_ctx_put``)."""
        self.files -= 1
        if self.closed:
            self._destroy_unreferenced()

    def _destroy_unreferenced(self) -> None:
        progress = True
        while progress:
            progress = False
            for obj in sorted(self.objects.values(), key=lambda o: -o.id):
                if not obj.busy():
                    self.remove(obj)
                    progress = True
        if not self.objects:
            self.compat_ioas = None


# --- IOAS ------------------------------------------------------------------------------


@attrs.define(eq=False)
class Ioas(IommufdObject):
    """``struct iommufd_ioas``: an I/O address space."""

    iopt: IoPagetable = attrs.Factory(IoPagetable)

    def destroy(self) -> None:
        for area in list(self.iopt.areas):
            self.iopt.remove(area)


@attrs.define(eq=False)
class DmaBufMemory:
    """A dma-buf's memory (`uaccess.FileMemory`): a buffer in the daemon, standing for
    the exporter's pages. While revoked, DMA and CPU access to it fault."""

    size: int
    tgid: int = 0
    data: bytearray = attrs.field(init=False)
    revoked: bool = False
    shmem: bool = True  # IOAS_MAP_FILE takes it
    areas: int = 0

    def __attrs_post_init__(self) -> None:
        self.data = bytearray(self.size)

    def read(self, addr: int, size: int) -> bytes:
        if self.revoked or addr < 0 or addr + size > self.size:
            raise KernelError(errno.EFAULT, "dma-buf access")
        return bytes(self.data[addr : addr + size])

    def write(self, addr: int, data: bytes) -> None:
        if self.revoked or addr < 0 or addr + len(data) > self.size:
            raise KernelError(errno.EFAULT, "dma-buf access")
        self.data[addr : addr + len(data)] = data

    def close(self) -> None:
        """The memory belongs to the dma-buf, not to the areas mapping it."""


@attrs.define(eq=False)
class DmaBuf:
    """An open dma-buf (``struct dma_buf``) made by IOMMU_TEST_OP_DMABUF_GET; the fd
    IOAS_MAP_FILE takes it by."""

    mem: DmaBufMemory

    def release(self) -> None:
        pass


# --- HWPT ------------------------------------------------------------------------------


@attrs.define(eq=False)
class Hwpt(IommufdObject):
    """``struct iommufd_hw_pagetable``: what paging and nested HWPTs share. ``fault``
    takes the page requests of DMA through ``domain`` (IOMMU_HWPT_FAULT_ID_VALID)."""

    domain: IommuDomain = attrs.Factory(IommuDomain)
    devices: list[IommufdDevice] = attrs.Factory(list)
    fault: IommufdFault | None = None
    pasid_compat: bool = False  # IOMMU_HWPT_ALLOC_PASID

    def destroy(self) -> None:
        if self.fault is not None:
            self.fault.users -= 1
            self.fault = None


@attrs.define(eq=False)
class HwptPaging(Hwpt):
    """``struct iommufd_hwpt_paging``: a domain that mirrors its IOAS. ``auto`` ones are
    made by attaching a device to an IOAS and vanish with their last device."""

    ioas: Ioas | None = None
    auto: bool = False
    nest_parent: bool = False

    def destroy(self) -> None:
        super().destroy()
        if self.ioas is not None:
            self.ioas.iopt.remove_domain(self.domain)
            self.ioas.users -= 1
            self.ioas = None


@attrs.define(eq=False)
class HwptNested(Hwpt):
    """``struct iommufd_hwpt_nested``: a user-managed stage 1 over a nesting parent,
    made on the parent HWPT or on a vIOMMU (which it then holds)."""

    parent: HwptPaging | None = None
    viommu: IommufdViommu | None = None

    def destroy(self) -> None:
        super().destroy()
        if self.viommu is not None:
            self.viommu.users -= 1
        elif self.parent is not None:
            self.parent.users -= 1
        self.viommu = self.parent = None


def iommufd_hwpt_paging_alloc(
    ictx: IommufdCtx,
    ioas: Ioas,
    idev: IommufdDevice,
    flags: int = 0,
    *,
    auto: bool,
    user_data: UserData | None = None,
) -> HwptPaging:
    """A paging domain from the device's IOMMU driver, filled from the IOAS (pinning,
    which may fail with ENOMEM under RLIMIT_MEMLOCK before anything changes). EOPNOTSUPP
    for flags the driver does not take (dirty tracking without the capability)."""
    valid = (
        I.IOMMU_HWPT_ALLOC_NEST_PARENT
        | I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
        | I.IOMMU_HWPT_FAULT_ID_VALID
        | I.IOMMU_HWPT_ALLOC_PASID
    )
    if flags & ~valid:
        raise KernelError(errno.EOPNOTSUPP, f"flags {flags:#x}")
    driver = idev.driver
    if flags & I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING and not driver.capable(
        idev.dev, IOMMU_CAP_DIRTY_TRACKING
    ):
        raise KernelError(errno.EOPNOTSUPP, "the IOMMU cannot track dirty pages")
    domain = driver.domain_alloc_paging_flags(
        idev.dev, flags & ~I.IOMMU_HWPT_FAULT_ID_VALID, user_data
    )
    hwpt = HwptPaging(
        ictx,
        ioas=ioas,
        domain=domain,
        auto=auto,
        nest_parent=bool(flags & I.IOMMU_HWPT_ALLOC_NEST_PARENT),
        pasid_compat=bool(flags & I.IOMMU_HWPT_ALLOC_PASID),
    )
    ioas.iopt.add_domain(domain)  # EINVAL / EADDRINUSE / ENOMEM: nothing changed
    ioas.users += 1
    ictx.add(hwpt)
    return hwpt


# --- DEVICE ----------------------------------------------------------------------------


@attrs.define(eq=False)
class IommufdDevice(IommufdObject):
    """``struct iommufd_device``: one device bound into a context by its driver (vfio,
    or the selftest). ``attached`` maps a PASID (0, ``IOMMU_NO_PASID``, for the whole
    device) to its HWPT; ``vdev`` is its vDEVICE, if a vIOMMU names it."""

    group: IommuGroup | None = None
    dev: object = None
    attached: dict[int, Hwpt] = attrs.Factory(dict)
    vdev: IommufdVdevice | None = None
    bound: bool = True  # the driver's reference: DESTROY says EBUSY

    @property
    def hwpt(self) -> Hwpt | None:
        return self.attached.get(IOMMU_NO_PASID)

    @property
    def driver(self) -> IommuDriver:
        """The IOMMU behind the device (``dev_iommu_ops``)."""
        assert self.group is not None
        return self.group.driver

    def busy(self) -> bool:
        return self.users > 0 or self.bound

    def destroy(self) -> None:
        if self.vdev is not None:
            # iommufd_device_pre_destroy(): a vDEVICE cannot outlive its device
            self.ictx.remove(self.vdev)
        for pasid in sorted(self.attached, reverse=True):
            iommufd_hw_pagetable_detach(self, pasid)
        if self.group is not None:
            self.group.release_dma_owner(self.ictx)


def iommufd_hw_pagetable_detach(idev: IommufdDevice, pasid: int) -> None:
    """Take ``idev``'s ``pasid`` off its HWPT: back to blocked DMA. Its pending page
    requests there are answered INVALID; an auto HWPT goes with its last device."""
    hwpt = idev.attached.pop(pasid, None)
    if hwpt is None:
        return
    iommufd_auto_response_faults(hwpt, idev, pasid)
    hwpt.devices.remove(idev)
    hwpt.users -= 1
    if isinstance(hwpt, HwptPaging) and hwpt.ioas is not None:
        hwpt.ioas.iopt.unreserve((idev, pasid))
    if idev.group is not None:
        if pasid == IOMMU_NO_PASID:
            idev.group.attach_domain(None)
        else:
            idev.group.pasid_domains.pop(pasid, None)
            idev.driver.set_dev_pasid(None, idev.dev, pasid, hwpt.domain)
    if isinstance(hwpt, HwptPaging) and hwpt.auto and not hwpt.devices:
        hwpt.ictx.remove(hwpt)


# --- ACCESS ----------------------------------------------------------------------------


@attrs.define(eq=False)
class AccessOps:
    """``struct iommufd_access_ops``: ``unmap(iova, length)`` asks the holder to unpin
    what it holds in a range that is being unmapped."""

    needs_pin_pages: bool = False
    unmap: Callable[[int, int], None] | None = None


@attrs.define(eq=False)
class IommufdAccess(IommufdObject):
    """``struct iommufd_access``: CPU access to an IOAS for emulated devices and for
    the core itself (``internal``: HW queues, never in the object table). ``pins``
    holds ``(iova, length, areas)`` per pin call."""

    ops: AccessOps = attrs.Factory(AccessOps)
    ioas: Ioas | None = None
    internal: bool = False
    pins: list[tuple[int, int, list[Area]]] = attrs.Factory(list)

    @property
    def iova_alignment(self) -> int:
        """``access->iova_alignment``: pinning works in whole CPU pages."""
        return PAGE_SIZE if self.ops.needs_pin_pages else 1

    def notify_unmap(self, iova: int, length: int) -> None:
        """The IOAS is unmapping ``[iova, iova+length)``: the holder unpins."""
        if self.ops.unmap is not None and not self.internal:
            self.ops.unmap(iova, length)

    def unpin(self, iova: int, length: int) -> None:
        """``iommufd_access_unpin_pages``: drop the pin of exactly that range."""
        for i, (piova, plen, areas) in enumerate(self.pins):
            if (piova, plen) == (iova, length):
                for a in areas:
                    if self.internal:
                        a.num_locks -= 1
                    else:
                        a.num_accesses -= 1
                del self.pins[i]
                return

    def detach(self) -> None:
        """``iommufd_access_detach``: unpin everything and leave the IOAS."""
        ioas = self.ioas
        if ioas is None:
            return
        for iova, length, _ in list(self.pins):
            self.unpin(iova, length)
        ioas.iopt.remove_access(self)
        ioas.users -= 1
        self.ioas = None

    def destroy(self) -> None:
        self.detach()


# --- event queues (FAULT, vEVENTQ) -----------------------------------------------------


@attrs.define(eq=False)
class IommufdEventq(IommufdObject):
    """``struct iommufd_eventq``: what both queues share (the file reads ``deliver``)."""

    wait_queue: WaitQueue = attrs.Factory(WaitQueue)

    def wake(self) -> None:
        self.wait_queue.wake()


@attrs.define(eq=False)
class IopfFault:
    """One page request (``struct iopf_fault``)."""

    flags: int
    pasid: int
    grpid: int
    perm: int
    addr: int


@attrs.define(eq=False)
class IopfGroup:
    """A page request group (``struct iopf_group``): the faults of one device and PASID
    that one response answers."""

    idev: IommufdDevice
    pasid: int
    faults: list[IopfFault]
    hwpt: Hwpt | None = None
    cookie: int = 0
    response: int | None = None  # the code user space answered, once it has


@attrs.define(eq=False)
class IommufdFault(IommufdEventq):
    """``struct iommufd_fault``: delivered groups wait in ``deliver``; read ones wait for
    their response in ``response`` (cookie -> group, cookies from 1 as XA_FLAGS_ALLOC1)."""

    deliver: deque[IopfGroup] = attrs.Factory(deque)
    response: dict[int, IopfGroup] = attrs.Factory(dict)

    def destroy(self) -> None:
        # iommufd_fault_destroy(): everything still pending is answered INVALID
        for group in [*self.deliver, *self.response.values()]:
            iopf_group_response(group, I.IOMMUFD_PAGE_RESP_INVALID)
        self.deliver.clear()
        self.response.clear()


def iopf_group_response(group: IopfGroup, code: int) -> None:
    """Answer a page request group; the device hears it if its model listens
    (``iopf_response(pasid, grpid, code)``)."""
    group.response = code
    hook = getattr(group.idev.dev, "iopf_response", None)
    if hook is not None:
        hook(group.pasid, group.faults[-1].grpid, code)


def iommufd_fault_iopf_handler(hwpt: Hwpt, group: IopfGroup) -> None:
    """A device faulted on ``hwpt``, which has a fault queue: queue the group."""
    fault = hwpt.fault
    assert fault is not None
    group.hwpt = hwpt
    fault.deliver.append(group)
    fault.wake()


def iommufd_auto_response_faults(hwpt: Hwpt, idev: IommufdDevice, pasid: int) -> None:
    """The device left ``hwpt`` (detach or replace): its pending faults there are
    answered INVALID and dropped."""
    fault = hwpt.fault
    if fault is None:
        return

    def mine(g: IopfGroup) -> bool:
        return g.hwpt is hwpt and g.idev is idev and g.pasid == pasid

    for g in [g for g in fault.deliver if mine(g)]:
        fault.deliver.remove(g)
        iopf_group_response(g, I.IOMMUFD_PAGE_RESP_INVALID)
    for cookie, g in list(fault.response.items()):
        if mine(g):
            del fault.response[cookie]
            iopf_group_response(g, I.IOMMUFD_PAGE_RESP_INVALID)


@attrs.define(eq=False)
class Vevent:
    """``struct iommufd_vevent``: a header and the driver's event data."""

    flags: int = 0
    sequence: int = 0
    data: bytes = b""
    lost: bool = False  # the lost-events header (no data follows it)


@attrs.define(eq=False)
class IommufdVeventq(IommufdEventq):
    """``struct iommufd_veventq``: at most ``depth`` events; past that the tail holds
    one LOST_EVENTS header, whose sequence moves on with each lost event."""

    viommu: IommufdViommu | None = None
    type: int = 0
    depth: int = 0
    num_events: int = 0
    sequence: int = 0
    deliver: deque[Vevent] = attrs.Factory(deque)
    lost_events_header: Vevent = attrs.Factory(
        lambda: Vevent(flags=I.IOMMU_VEVENTQ_FLAG_LOST_EVENTS, lost=True)
    )

    def destroy(self) -> None:
        self.deliver.clear()
        if self.viommu is not None:
            if self in self.viommu.veventqs:
                self.viommu.veventqs.remove(self)
            self.viommu.users -= 1
            self.viommu = None


# --- vIOMMU, vDEVICE, HW queue (include/linux/iommufd.h) -------------------------------


class IommufdViommuOps:
    """``struct iommufd_viommu_ops``, filled by the IOMMU driver's ``viommu_init``. An
    op the driver leaves out answers as the core does when its pointer is NULL."""

    def destroy(self, viommu: IommufdViommu) -> None:
        """The vIOMMU is going."""

    def alloc_domain_nested(
        self, viommu: IommufdViommu, flags: int, user_data: UserData | None
    ) -> IommuDomain:
        raise KernelError(errno.EOPNOTSUPP, "the vIOMMU has no nested domains")

    def cache_invalidate(self, viommu: IommufdViommu, array: UserDataArray) -> None:
        raise KernelError(errno.EOPNOTSUPP, "the vIOMMU takes no invalidation")

    def vdevice_init(self, vdev: IommufdVdevice) -> None:
        """A vDEVICE names one of the vIOMMU's devices."""

    def vdevice_destroy(self, vdev: IommufdVdevice) -> None:
        """That vDEVICE is going."""

    def get_hw_queue_size(self, viommu: IommufdViommu, queue_type: int) -> int:
        """Non-zero when the driver has HW queues of ``queue_type``."""
        return 0

    def hw_queue_init_phys(
        self, hw_queue: IommufdHwQueue, index: int, base: tuple[object, int]
    ) -> None:
        """``base`` is where the queue memory is: (its memory, the address there)."""
        raise KernelError(errno.EOPNOTSUPP, "no HW queues")


@attrs.define(eq=False)
class IommufdViommu(IommufdObject):
    """``struct iommufd_viommu``: a nesting-parent HWPT for one IOMMU instance (the
    driver behind the device), with the driver's ``ops``."""

    type: int = 0
    hwpt: HwptPaging | None = None
    iommu_dev: IommuDriver | None = None
    ops: IommufdViommuOps = attrs.Factory(IommufdViommuOps)
    vdevs: dict[int, IommufdVdevice] = attrs.Factory(dict)  # virt_id -> vDEVICE
    veventqs: list[IommufdVeventq] = attrs.Factory(list)

    def destroy(self) -> None:
        self.ops.destroy(self)
        if self.hwpt is not None:
            self.hwpt.users -= 1
            self.hwpt = None


@attrs.define(eq=False)
class IommufdVdevice(IommufdObject):
    """``struct iommufd_vdevice``: a device as one vIOMMU names it (``virt_id``)."""

    viommu: IommufdViommu | None = None
    idev: IommufdDevice | None = None
    virt_id: int = 0

    def destroy(self) -> None:
        viommu, idev = self.viommu, self.idev
        if viommu is None:
            return
        viommu.ops.vdevice_destroy(self)
        if viommu.vdevs.get(self.virt_id) is self:
            del viommu.vdevs[self.virt_id]
        viommu.users -= 1
        if idev is not None and idev.vdev is self:
            idev.vdev = None
        self.viommu = None


@attrs.define(eq=False)
class IommufdHwQueue(IommufdObject):
    """``struct iommufd_hw_queue``: queue memory the hardware reads by physical
    address, pinned in the parent IOAS (by an internal access) for the queue's life."""

    viommu: IommufdViommu | None = None
    type: int = 0
    index: int = 0
    base_addr: int = 0
    length: int = 0
    access: IommufdAccess | None = None
    on_destroy: Callable[[IommufdHwQueue], None] | None = None  # hw_queue->destroy

    def destroy(self) -> None:
        if self.on_destroy is not None:
            self.on_destroy(self)
        if self.access is not None:
            self.access.detach()
            self.access = None
        if self.viommu is not None:
            self.viommu.users -= 1
            self.viommu = None
