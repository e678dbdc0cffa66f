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

import attrs

from ..abi import iommufd as I
from ..abi.poll import POLLIN, POLLOUT, POLLRDNORM
from ..errors import KernelError
from ..idr import ida_alloc_min
from ..ioctl_table import Ucmd
from ..uaccess import Caller
from ..waitqueue import WaitQueue
from .iommufd_private import (
    IommufdCtx,
    IommufdEventq,
    IommufdFault,
    IommufdVeventq,
    IommufdViommu,
    iopf_group_response,
)

log = logging.getLogger("vfiofs.iommufd")

FAULT_SIZE = I.IommuHwptPgfault.SIZE  # 40
RESPONSE_SIZE = I.IommuHwptPageResponse.SIZE  # 8
HEADER_SIZE = I.IommufdVeventHeader.SIZE  # 8


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
        cookie = ida_alloc_min(fault.response, 1)
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
    """The fd of a FAULT or vEVENTQ object (``iommufd_eventq_fops``). Opened with
    ``nonseekable_open``: a stream, read and written at no offset."""

    eventq: IommufdEventq
    released: bool = False
    nonseekable: bool = True

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
        q = self.eventq
        mask = POLLOUT if isinstance(q, IommufdFault) else 0
        if isinstance(q, IommufdFault | IommufdVeventq) and q.deliver:
            mask |= POLLIN | POLLRDNORM
        return mask, q.wait_queue

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
        iommufd_eventq_init(fault, ucmd, I.IommuFaultAlloc.offsetof("out_fault_fd"))
    except BaseException:
        ictx.remove(fault)
        raise
    return 0


def iommufd_veventq_alloc(ictx: IommufdCtx, ucmd: Ucmd) -> int:
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
            veventq, ucmd, I.IommuVeventqAlloc.offsetof("out_veventq_fd")
        )
    except BaseException:
        ictx.remove(veventq)
        raise
    return 0
