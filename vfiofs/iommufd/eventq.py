"""Mirror of drivers/iommu/iommufd/eventq.c: the FAULT object (IOMMU_FAULT_QUEUE_ALLOC)
and the vEVENTQ object (IOMMU_VEVENTQ_ALLOC), and the file each one hands to user space.

Both are event queues read through a file: the ioctl creates the object and installs a
new fd in the caller (``Caller.install_fd``; under ``vfiofs run`` the seccomp supervisor
does it, a plain mount answers EOPNOTSUPP). The file is one of our FUSE files, so read,
write and poll reach `EventqFile` with the kernel's sizes and errnos. Reads never block
(an empty queue reads 0 bytes); poll says when there is something to read.

The file holds a reference on its object (DESTROY answers EBUSY while it is open) and
keeps the context alive, as ``iommufd_eventq_init`` takes ``users`` and a ctx reference.
"""

from __future__ import annotations

import errno
import logging
from collections import deque
from typing import Any

import attrs

from ..abi import iommufd as I
from ..errors import KernelError
from ..ioctl_table import Ucmd
from ..uaccess import Caller
from ..waitqueue import WaitQueue
from .main import IommufdCtx, IommufdObject

log = logging.getLogger("vfiofs.iommufd")

POLLIN, POLLOUT, POLLRDNORM = 0x001, 0x004, 0x040
FOPEN_NONSEEKABLE, FOPEN_STREAM = 1 << 2, 1 << 4
INT_MAX = (1 << 31) - 1
FAULT_SIZE = I.IommuHwptPgfault.SIZE  # 40
RESPONSE_SIZE = I.IommuHwptPageResponse.SIZE  # 8
HEADER_SIZE = I.IommufdVeventHeader.SIZE  # 8


@attrs.define(eq=False)
class IommufdEventq(IommufdObject):
    """``struct iommufd_eventq``: what both queues share."""

    deliver: deque[Any] = attrs.Factory(deque)
    wait_queue: WaitQueue = attrs.Factory(WaitQueue)

    def wake(self) -> None:
        self.wait_queue.wake()


# --- FAULT -----------------------------------------------------------------------------


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

    idev: Any  # the IommufdDevice that faulted
    pasid: int
    faults: list[IopfFault]
    hwpt: Any = None
    cookie: int = 0
    response: int | None = None  # the code user space answered, once it has


@attrs.define(eq=False)
class IommufdFault(IommufdEventq):
    """``struct iommufd_fault``: delivered groups wait in ``deliver``; read ones wait for
    their response in ``response`` (cookie -> group, cookies from 1 as XA_FLAGS_ALLOC1)."""

    response: dict[int, IopfGroup] = attrs.Factory(dict)

    def destroy(self) -> None:
        # iommufd_fault_destroy(): everything still pending is answered INVALID
        for group in [*self.deliver, *self.response.values()]:
            iopf_group_response(group, I.IOMMUFD_PAGE_RESP_INVALID)
        self.deliver.clear()
        self.response.clear()


def iopf_group_response(group: IopfGroup, code: int) -> None:
    """Answer a page request group; the device hears it if its model listens."""
    group.response = code
    dev = getattr(group.idev, "dev", None)
    hook = getattr(dev, "iopf_response", None)
    if hook is not None:
        hook(group.pasid, group.faults[-1].grpid, code)


def iommufd_fault_iopf_handler(hwpt: Any, group: IopfGroup) -> None:
    """A device faulted on ``hwpt`` (which has a fault queue): queue the group."""
    fault: IommufdFault = hwpt.fault
    group.hwpt = hwpt
    fault.deliver.append(group)
    fault.wake()


def iommufd_auto_response_faults(hwpt: Any, idev: Any, pasid: int) -> None:
    """The device left ``hwpt`` (detach or replace): its pending faults are answered
    INVALID and dropped (iommufd_auto_response_faults)."""
    fault: IommufdFault | None = getattr(hwpt, "fault", None)
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


def _fault_read(fault: IommufdFault, offset: int, count: int) -> bytes:
    """iommufd_fault_fops_read(): whole groups only, each record 40 bytes."""
    if offset or count % FAULT_SIZE:
        raise KernelError(errno.ESPIPE, f"read of {count} bytes at {offset}")
    out = bytearray()
    while fault.deliver:
        group = fault.deliver[0]
        if len(out) >= count or len(group.faults) * FAULT_SIZE > count - len(out):
            break
        fault.deliver.popleft()
        cookie = 1
        while cookie in fault.response:
            cookie += 1
        group.cookie = cookie
        fault.response[cookie] = group
        for f in group.faults:
            out += I.IommuHwptPgfault(
                flags=f.flags,
                dev_id=group.idev.id,
                pasid=f.pasid,
                grpid=f.grpid,
                perm=f.perm,
                addr=f.addr,
                length=0,
                cookie=cookie,
            ).pack()
    return bytes(out)


def _fault_write(fault: IommufdFault, offset: int, data: bytes) -> int:
    """iommufd_fault_fops_write(): responses of 8 bytes; partial progress counts."""
    if offset or len(data) % RESPONSE_SIZE:
        raise KernelError(errno.ESPIPE, f"write of {len(data)} bytes at {offset}")
    done = 0
    err: KernelError | None = None
    while done < len(data):
        resp = I.IommuHwptPageResponse.unpack_from(data, done)
        if resp.code not in (I.IOMMUFD_PAGE_RESP_SUCCESS, I.IOMMUFD_PAGE_RESP_INVALID):
            err = KernelError(errno.EINVAL, f"response code {resp.code}")
            break
        group = fault.response.pop(resp.cookie, None)
        if group is None:
            err = KernelError(errno.EINVAL, f"no fault with cookie {resp.cookie}")
            break
        iopf_group_response(group, resp.code)
        done += RESPONSE_SIZE
    if done == 0 and err is not None:
        raise err
    return done


# --- vEVENTQ ---------------------------------------------------------------------------


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

    viommu: Any = None
    type: int = 0
    depth: int = 0
    num_events: int = 0
    sequence: int = 0
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


def iommufd_vevent_handler(veventq: IommufdVeventq, vevent: Vevent) -> None:
    """Queue ``vevent`` (maybe the lost-events header), stamping the next sequence."""
    lost = veventq.lost_events_header
    if veventq.deliver and veventq.deliver[-1] is lost:
        veventq.deliver.pop()
    veventq.deliver.append(vevent)
    vevent.sequence = veventq.sequence
    veventq.sequence = (veventq.sequence + 1) & INT_MAX
    veventq.wake()


def iommufd_viommu_report_event(viommu: Any, vtype: int, data: bytes) -> None:
    """A driver reports an event of ``vtype``; EOPNOTSUPP when no vEVENTQ takes it."""
    veventq = next((q for q in viommu.veventqs if q.type == vtype), None)
    if veventq is None:
        raise KernelError(errno.EOPNOTSUPP, f"no vEVENTQ of type {vtype:#x}")
    if veventq.num_events == veventq.depth:
        vevent = veventq.lost_events_header
    else:
        vevent = Vevent(data=bytes(data))
        veventq.num_events += 1
    iommufd_vevent_handler(veventq, vevent)


def _veventq_read(veventq: IommufdVeventq, offset: int, count: int) -> bytes:
    """iommufd_veventq_fops_read(): whole events (header + data) while they fit."""
    if offset:
        raise KernelError(errno.ESPIPE, f"read at {offset}")
    out = bytearray()
    while veventq.deliver:
        cur = veventq.deliver[0]
        if len(out) >= count or count - len(out) < HEADER_SIZE:
            break
        if not cur.lost and HEADER_SIZE + len(cur.data) > count - len(out):
            break
        veventq.deliver.popleft()
        out += I.IommufdVeventHeader(cur.flags, cur.sequence).pack() + cur.data
        if not cur.lost:
            veventq.num_events -= 1
    return bytes(out)


# --- the file -------------------------------------------------------------------------


@attrs.define(eq=False)
class EventqFile:
    """The fd of a FAULT or vEVENTQ object (``iommufd_eventq_fops``)."""

    eventq: IommufdEventq
    released: bool = False
    fopen_flags: int = FOPEN_STREAM | FOPEN_NONSEEKABLE  # nonseekable_open()

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        q = self.eventq
        if isinstance(q, IommufdFault):
            return _fault_read(q, offset, size)
        assert isinstance(q, IommufdVeventq)
        return _veventq_read(q, offset, size)

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        q = self.eventq
        if not isinstance(q, IommufdFault):
            raise KernelError(errno.EINVAL, "a vEVENTQ is read-only")
        return _fault_write(q, offset, data)

    def poll(self, caller: Caller) -> tuple[int, WaitQueue | None]:
        mask = POLLOUT if isinstance(self.eventq, IommufdFault) else 0
        if self.eventq.deliver:
            mask |= POLLIN | POLLRDNORM
        return mask, self.eventq.wait_queue

    def release(self) -> None:
        """iommufd_eventq_fops_release(): drop the object and the context references."""
        if self.released:
            return
        self.released = True
        self.eventq.users -= 1
        self.eventq.ictx.file_closed()


def iommufd_eventq_init(eventq: IommufdEventq, ucmd: Ucmd, fd_offset: int) -> None:
    """Make the object's file and install it as a new fd of the caller, its number at
    ``arg + fd_offset``. On failure nothing stays referenced."""
    file = EventqFile(eventq)
    eventq.users += 1
    eventq.ictx.file_opened()
    try:
        ucmd.caller.install_fd(file, ucmd.arg + fd_offset)
    except BaseException:
        file.release()
        raise


# --- ioctls ----------------------------------------------------------------------------


def iommufd_fault_alloc(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    c = ucmd.cmd
    if c.flags:
        raise KernelError(errno.EOPNOTSUPP, "flags")
    fault = IommufdFault(ictx)
    ictx.add(fault)
    ucmd.respond(attrs.evolve(c, out_fault_id=fault.id, out_fault_fd=0))
    try:
        iommufd_eventq_init(
            fault, ucmd, I.IommuFaultAlloc.offsetofend("out_fault_fd") - 4
        )
    except BaseException:
        ictx.remove(fault)
        raise
    return 0


def iommufd_veventq_alloc(ictx: IommufdCtx, ucmd: Ucmd) -> int:
    from .viommu import IommufdViommu

    c = ucmd.cmd
    if c.flags or c.reserved or c.type == I.IOMMU_VEVENTQ_TYPE_DEFAULT:
        raise KernelError(errno.EOPNOTSUPP, "flags, reserved or type")
    if not c.veventq_depth:
        raise KernelError(errno.EINVAL, "veventq_depth 0")
    viommu = ictx.get(c.viommu_id, IommufdViommu)
    if any(q.type == c.type for q in viommu.veventqs):
        raise KernelError(errno.EEXIST, f"the vIOMMU has a vEVENTQ of type {c.type:#x}")
    veventq = IommufdVeventq(ictx, viommu=viommu, type=c.type, depth=c.veventq_depth)
    viommu.users += 1
    viommu.veventqs.append(veventq)
    ictx.add(veventq)
    ucmd.respond(attrs.evolve(c, out_veventq_id=veventq.id, out_veventq_fd=0))
    try:
        iommufd_eventq_init(
            veventq, ucmd, I.IommuVeventqAlloc.offsetofend("out_veventq_fd") - 4
        )
    except BaseException:
        ictx.remove(veventq)
        raise
    return 0
