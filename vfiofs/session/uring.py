"""A small io_uring for FUSE: setup, the shared rings, 128-byte SQEs, completions.

Mirror of the parts of include/uapi/linux/io_uring.h that FUSE over io_uring needs
(io_uring_setup(2), io_uring_enter(2), IORING_OP_URING_CMD on SQE128 rings,
IORING_OP_POLL_ADD). No maintained Python binding lets a program fill the 80-byte
command area of a 128-byte SQE, so this is ctypes for the two system calls and `mmap`
for the rings.

The rings are shared memory. The kernel writes the CQ tail and the SQ head; we write the
SQ tail and the CQ head. On x86-64 (TSO) plain stores and loads give the ordering the
kernel's smp_load_acquire/smp_store_release pair needs, because every store here
happens after the data it publishes; `available()` is False on other architectures.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import struct
from typing import Final

_SYS_io_uring_setup: Final = 425
_SYS_io_uring_enter: Final = 426

IORING_SETUP_CQSIZE: Final = 1 << 3
IORING_SETUP_SUBMIT_ALL: Final = 1 << 7
IORING_SETUP_SQE128: Final = 1 << 10
IORING_SETUP_SINGLE_ISSUER: Final = 1 << 12

IORING_FEAT_SINGLE_MMAP: Final = 1 << 0
IORING_FEAT_EXT_ARG: Final = 1 << 8

IORING_OFF_SQ_RING: Final = 0
IORING_OFF_CQ_RING: Final = 0x8000000
IORING_OFF_SQES: Final = 0x10000000

IORING_ENTER_GETEVENTS: Final = 1 << 0
IORING_ENTER_EXT_ARG: Final = 1 << 3

IORING_OP_POLL_ADD: Final = 6
IORING_OP_URING_CMD: Final = 46
IORING_POLL_ADD_MULTI: Final = 1 << 0
IORING_CQE_F_MORE: Final = 1 << 1

SQE_SIZE: Final = 128  # IORING_SETUP_SQE128
SQE_CMD_OFFSET: Final = 48  # the 80-byte command area of a 128-byte SQE
CQE_SIZE: Final = 16

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_syscall = _libc.syscall


class IoSqringOffsets(ctypes.Structure):
    _fields_ = (
        ("head", ctypes.c_uint32),
        ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32),
        ("ring_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("dropped", ctypes.c_uint32),
        ("array", ctypes.c_uint32),
        ("resv1", ctypes.c_uint32),
        ("user_addr", ctypes.c_uint64),
    )


class IoCqringOffsets(ctypes.Structure):
    _fields_ = (
        ("head", ctypes.c_uint32),
        ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32),
        ("ring_entries", ctypes.c_uint32),
        ("overflow", ctypes.c_uint32),
        ("cqes", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("resv1", ctypes.c_uint32),
        ("user_addr", ctypes.c_uint64),
    )


class IoUringParams(ctypes.Structure):
    _fields_ = (
        ("sq_entries", ctypes.c_uint32),
        ("cq_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("sq_thread_cpu", ctypes.c_uint32),
        ("sq_thread_idle", ctypes.c_uint32),
        ("features", ctypes.c_uint32),
        ("wq_fd", ctypes.c_uint32),
        ("resv", ctypes.c_uint32 * 3),
        ("sq_off", IoSqringOffsets),
        ("cq_off", IoCqringOffsets),
    )


class IoUringGeteventsArg(ctypes.Structure):
    """struct io_uring_getevents_arg (IORING_ENTER_EXT_ARG): a timeout for the wait."""

    _fields_ = (
        ("sigmask", ctypes.c_uint64),
        ("sigmask_sz", ctypes.c_uint32),
        ("min_wait_usec", ctypes.c_uint32),
        ("ts", ctypes.c_uint64),
    )


class KernelTimespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_int64))


# opcode flags ioprio fd | off (cmd_op, pad) | addr | len op_flags | user_data
_SQE_HEAD = struct.Struct("=BBHiIIQIIQ")


def prep_sqe(
    buf: bytearray | memoryview,
    offset: int,
    opcode: int,
    fd: int,
    *,
    cmd_op: int = 0,
    addr: int = 0,
    length: int = 0,
    op_flags: int = 0,
    user_data: int = 0,
    cmd: bytes = b"",
) -> None:
    """Fill the 128-byte SQE at ``offset`` of ``buf`` (``cmd`` goes to the 80-byte
    command area); every other field is zero."""
    buf[offset : offset + SQE_SIZE] = bytes(SQE_SIZE)
    _SQE_HEAD.pack_into(
        buf, offset, opcode, 0, 0, fd, cmd_op, 0, addr, length, op_flags, user_data
    )
    if cmd:
        start = offset + SQE_CMD_OFFSET
        buf[start : start + len(cmd)] = cmd


def available() -> str | None:
    """Why io_uring cannot be used by this process, or None."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"the ring code assumes x86-64 memory ordering ({platform.machine()})"
    p = IoUringParams()
    fd = _syscall(_SYS_io_uring_setup, 1, ctypes.byref(p))
    if fd < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            return "no io_uring in this kernel"
        if err == errno.EPERM:
            return "io_uring is disabled (kernel.io_uring_disabled)"
        return f"io_uring_setup: {os.strerror(err)}"
    os.close(fd)
    return None


class Ring:
    """One io_uring instance with 128-byte SQEs, used from one thread.

    ``sqe(index)`` is the byte offset of an SQE slot in ``sqes``; a caller fills slots
    and queues them with `push`, which `enter` submits.
    """

    def __init__(self, entries: int, cq_entries: int | None = None) -> None:
        p = IoUringParams()
        p.flags = (
            IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_SUBMIT_ALL
        )
        if cq_entries:
            p.flags |= IORING_SETUP_CQSIZE
            p.cq_entries = cq_entries
        fd = _syscall(_SYS_io_uring_setup, entries, ctypes.byref(p))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"io_uring_setup: {os.strerror(err)}")
        self.fd = fd
        self.features = p.features
        try:
            self._map(p)
        except BaseException:
            os.close(fd)
            raise
        self._pending = 0  # pushed, not yet submitted
        self._ts = KernelTimespec()
        self._arg = IoUringGeteventsArg(ts=ctypes.addressof(self._ts))
        self._argp = ctypes.c_void_p(ctypes.addressof(self._arg))
        self._argsz = ctypes.c_size_t(ctypes.sizeof(IoUringGeteventsArg))
        self._null = ctypes.c_void_p(0)
        self._zero = ctypes.c_size_t(0)

    def _map(self, p: IoUringParams) -> None:
        so, co = p.sq_off, p.cq_off
        sq_size = so.array + p.sq_entries * 4
        cq_size = co.cqes + p.cq_entries * CQE_SIZE
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        flags = mmap.MAP_SHARED | mmap.MAP_POPULATE
        if p.features & IORING_FEAT_SINGLE_MMAP:
            sq_size = cq_size = max(sq_size, cq_size)
            self._sq_map = mmap.mmap(self.fd, sq_size, flags, prot, offset=0)
            self._cq_map = self._sq_map
        else:
            self._sq_map = mmap.mmap(self.fd, sq_size, flags, prot, offset=0)
            self._cq_map = mmap.mmap(
                self.fd, cq_size, flags, prot, offset=IORING_OFF_CQ_RING
            )
        self._sqe_map = mmap.mmap(
            self.fd, p.sq_entries * SQE_SIZE, flags, prot, offset=IORING_OFF_SQES
        )
        self.sqes = memoryview(self._sqe_map)
        self.sqes64 = self.sqes.cast("Q")
        sq32 = memoryview(self._sq_map).cast("I")
        cq32 = memoryview(self._cq_map).cast("I")
        self.sq32, self.cq32 = sq32, cq32
        self.cq_i32 = memoryview(self._cq_map).cast("i")
        self.cq64 = memoryview(self._cq_map).cast("Q")
        self.sq_head, self.sq_tail = so.head // 4, so.tail // 4
        self.sq_mask = sq32[so.ring_mask // 4]
        self.sq_entries = p.sq_entries
        self.sq_array = so.array // 4
        self.cq_head, self.cq_tail = co.head // 4, co.tail // 4
        self.cq_mask = cq32[co.ring_mask // 4]
        self.cq_entries = p.cq_entries
        self.cqes = co.cqes  # byte offset of the first CQE
        self.cq_overflow = co.overflow // 4

    # --- submission -------------------------------------------------------------------

    def next_slot(self) -> int:
        """The SQE slot the next `push` should use (the one at the SQ tail)."""
        return int(self.sq32[self.sq_tail] & self.sq_mask)

    def push(self, index: int) -> None:
        """Queue SQE slot ``index`` for the next `enter`."""
        sq32 = self.sq32
        tail = sq32[self.sq_tail]
        sq32[self.sq_array + (tail & self.sq_mask)] = index
        sq32[self.sq_tail] = (tail + 1) & 0xFFFFFFFF
        self._pending += 1

    @property
    def pending(self) -> int:
        """SQEs pushed and not yet submitted."""
        return self._pending

    def enter(self, wait: int = 0, timeout_ns: int | None = None) -> int:
        """Submit what was pushed and wait for ``wait`` completions (at most
        ``timeout_ns`` if given). Returns 0, or the errno (EINTR, ETIME, EBUSY...)."""
        flags = IORING_ENTER_GETEVENTS if wait else 0
        if timeout_ns is not None and wait:
            self._ts.tv_sec, self._ts.tv_nsec = divmod(timeout_ns, 1_000_000_000)
            flags |= IORING_ENTER_EXT_ARG
            argp, argsz = self._argp, self._argsz
        else:
            argp, argsz = self._null, self._zero
        n = self._pending
        rc = _syscall(_SYS_io_uring_enter, self.fd, n, wait, flags, argp, argsz)
        if rc < 0:
            return ctypes.get_errno()
        self._pending = n - rc if rc < n else 0
        return 0

    # --- completion -------------------------------------------------------------------

    def completions(self) -> list[tuple[int, int, int]]:
        """Take every posted CQE: ``(user_data, res, flags)``."""
        cq32 = self.cq32
        head, tail = cq32[self.cq_head], cq32[self.cq_tail]
        if head == tail:
            return []
        out = []
        mask, base = self.cq_mask, self.cqes
        cq64, cqi = self.cq64, self.cq_i32
        while head != tail:
            off = base + (head & mask) * CQE_SIZE
            out.append((cq64[off // 8], cqi[off // 4 + 2], cq32[off // 4 + 3]))
            head = (head + 1) & 0xFFFFFFFF
        cq32[self.cq_head] = head
        return out

    def ready(self) -> bool:
        """Whether a CQE is waiting."""
        cq32 = self.cq32
        return bool(cq32[self.cq_head] != cq32[self.cq_tail])

    def close(self) -> None:
        """Unmap the rings and close the ring fd (the kernel cancels what is in flight)."""
        if self.fd < 0:
            return
        for name in ("sqes", "sqes64", "sq32", "cq32", "cq_i32", "cq64"):
            getattr(self, name).release()
        self._sqe_map.close()
        if self._cq_map is not self._sq_map:
            self._cq_map.close()
        self._sq_map.close()
        os.close(self.fd)
        self.fd = -1
