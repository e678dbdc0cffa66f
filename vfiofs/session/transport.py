"""How FUSE requests reach the serve loop and how replies leave it.

Two transports with one shape: ``run(handle)`` calls ``handle(message, token)`` for each
request (``message`` is exactly what one read of /dev/fuse gives), and the session answers
with ``reply(token, data)``, inline or later from a task of its own. ``notify`` sends an
unsolicited message (FUSE_NOTIFY_POLL), always through /dev/fuse.

- `DevFuseTransport`: read(2) one request from /dev/fuse, write(2) its reply. Any fd that
  keeps message boundaries will do (tests use a SOCK_SEQPACKET socket as the kernel).
- `UringTransport`: FUSE over io_uring (fs/fuse/dev_uring.c), one queue per CPU as the
  kernel requires. A reply and the fetch of the next request are one COMMIT_AND_FETCH
  command, and one io_uring_enter(2) submits the replies and waits for the next request.
  FORGET and INTERRUPT still come through /dev/fuse, as do notifications.

Both wait alike: they serve what is queued without waiting, and wait through trio only
when nothing is (trio's thread also runs the parked requests, the signal handlers and
the calls of other threads, so the loop never blocks it in the kernel: see
docs/performance.md for what a blocking wait would gain and why it is not used). Every
`YIELD_EVERY` requests trio gets a turn regardless.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import select
from collections.abc import Callable
from typing import Final, Protocol

import trio

from ..abi.fuse_kernel import (
    FUSE_URING_ENT_IN_OUT_OFFSET,
    FUSE_URING_REQ_HEADER_SIZE,
    FuseUringCmd,
    FuseUringCmdReq,
)
from . import uring

log = logging.getLogger("vfiofs.transport")

# The kernel refuses reads smaller than one request: header + the largest fixed args
# (fuse_write_in) + max_write.
READ_BUFFER_EXTRA: Final = 4096
YIELD_EVERY: Final = 32  # requests served back to back before other tasks get a turn

# message, token -> True when the session is over (DESTROY)
Handler = Callable[[memoryview, int], bool]

DEV: Final = -1  # the token of a request that came through /dev/fuse


class Transport(Protocol):
    """What the serve loop needs from a transport."""

    name: str

    async def run(self, handle: Handler) -> None:
        """Serve requests until the filesystem is gone (or ``handle`` says DESTROY)."""
        ...

    def reply(self, token: int, data: bytes) -> None:
        """Send the reply to the request that came with ``token``."""
        ...

    def notify(self, data: bytes) -> None:
        """Send an unsolicited message (FUSE_NOTIFY_*)."""
        ...

    def close(self) -> None:
        """Release what the transport holds (not the /dev/fuse fd: the session owns it)."""
        ...


def write_failed(e: OSError) -> None:
    """A reply that could not be written: normal when the request or the mount is gone."""
    if e.errno == errno.ENOENT:  # the request was interrupted and is gone
        log.debug("reply to a request that is gone")
    elif e.errno in (errno.ENODEV, errno.EBADF, errno.ENOTCONN):
        log.debug("reply after unmount")
    else:
        raise e


class DevFuseTransport:
    """Requests by read(2) on /dev/fuse (one request per read), replies by write(2).

    The loop reads first and waits (trio's `wait_readable`) only when the read would
    block: waiting before every read costs twice the C server's time per request.
    """

    name = "dev"

    def __init__(self, fd: int, max_write: int = 1 << 20) -> None:
        self.fd = fd
        self.buffer_size = max_write + READ_BUFFER_EXTRA

    def read(self, buf: bytearray) -> int | None:
        """One message into ``buf``: its length, or None when the filesystem is gone.

        Raises:
            BlockingIOError: nothing is queued.
        """
        while True:
            try:
                return os.readv(self.fd, [buf])
            except OSError as e:
                if isinstance(e, BlockingIOError):
                    raise
                if e.errno == errno.ENOENT:  # interrupted before we read it
                    continue
                if e.errno in (errno.ENODEV, errno.EBADF):
                    return None
                raise

    async def receive(self, buf: bytearray) -> int | None:
        """Wait for one message (`read`, waiting through trio)."""
        while True:
            try:
                return self.read(buf)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.fd)

    def write(self, data: bytes) -> None:
        """Write one message (a reply or a notification)."""
        try:
            os.write(self.fd, data)
        except OSError as e:
            write_failed(e)

    def reply(self, token: int, data: bytes) -> None:
        self.write(data)

    notify = write

    async def run(self, handle: Handler) -> None:
        """The loop, written out for speed: one readv per request."""
        buf = bytearray(self.buffer_size)
        bufs = [buf]
        view = memoryview(buf)
        fd = self.fd
        readv = os.readv
        wait_readable = trio.lowlevel.wait_readable
        streak = 0
        while True:
            try:
                n = readv(fd, bufs)
            except BlockingIOError:
                streak = 0
                await wait_readable(fd)
                continue
            except OSError as e:
                if e.errno == errno.ENOENT:  # interrupted before we read it
                    continue
                if e.errno in (errno.ENODEV, errno.EBADF):
                    return
                raise
            if not n:  # end of file: only a socket standing in for /dev/fuse does that
                return
            if handle(view[:n], DEV):
                return
            streak += 1
            if streak >= YIELD_EVERY:
                streak = 0
                await trio.lowlevel.checkpoint()

    def close(self) -> None:
        pass


# --- FUSE over io_uring ------------------------------------------------------------------

_IN_HEADER = 40  # sizeof(struct fuse_in_header)
_OUT_HEADER = 16  # sizeof(struct fuse_out_header)
_OP_IN = 128  # offsetof(struct fuse_uring_req_header, op_in)
# fuse_uring_ent_in_out.payload_sz, as an index into the header page seen as u32s
_PAYLOAD_SZ = (FUSE_URING_ENT_IN_OUT_OFFSET + 16) // 4
# A request's fuse_in_header is copied to just before op_in, so that header and op_in
# read as one message, as /dev/fuse would give it.
_JOIN = _OP_IN - _IN_HEADER
_POLL_TOKEN: Final = 1 << 62  # user_data of the poll on /dev/fuse
_PAGE = mmap.PAGESIZE
# Entries per queue, and how many are kept free when requests park. The kernel gives a
# newly registered entry only requests that arrive after it (fuse_uring_do_register()
# does not look at requests already queued; only a commit fetches those), so the pool
# must be large enough before a burst of blocking requests arrives.
ENTRIES_PER_QUEUE: Final = 8
MIN_FREE_PER_QUEUE: Final = 4
_SQ_ENTRIES: Final = 256
_COMMIT_ID: Final = (
    uring.SQE_CMD_OFFSET + 8
) // 8  # fuse_uring_cmd_req.commit_id, in u64s
_GONE: Final = (errno.ENOTCONN, errno.ECONNABORTED, errno.ENODEV, errno.ECANCELED)


class _IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


def possible_cpus() -> int:
    """num_possible_cpus(): the kernel makes one ring queue per possible CPU."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            spec = f.read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def uring_unavailable() -> str | None:
    """Why this kernel would not serve FUSE over io_uring to us, or None."""
    try:
        with open("/sys/module/fuse/parameters/enable_uring") as f:
            enabled = f.read().strip()
    except OSError:
        return "this kernel has no FUSE over io_uring (CONFIG_FUSE_IO_URING)"
    if enabled != "Y":
        return (
            "the kernel does not offer it: /sys/module/fuse/parameters/enable_uring "
            "is N (root can set it to Y)"
        )
    return uring.available()


class RingEntry:
    """One registered ring entry: a header page and a payload buffer, in one mapping."""

    __slots__ = (
        "_anchor",
        "busy",
        "commit_sqe",
        "h32",
        "hv",
        "index",
        "iov",
        "map",
        "pv",
        "qid",
    )

    def __init__(self, index: int, qid: int, payload: int, fuse_fd: int) -> None:
        self.index, self.qid = index, qid
        self.busy = False  # holds a request we have not answered yet
        self.map = mmap.mmap(-1, _PAGE + payload)
        self._anchor = ctypes.c_char.from_buffer(self.map)
        base = ctypes.addressof(self._anchor)
        self.hv = memoryview(self.map)[:FUSE_URING_REQ_HEADER_SIZE]
        self.h32 = self.hv.cast("I")
        self.pv = memoryview(self.map)[_PAGE:]
        self.iov = (_IoVec * 2)(
            _IoVec(base, FUSE_URING_REQ_HEADER_SIZE), _IoVec(base + _PAGE, payload)
        )
        sqe = bytearray(uring.SQE_SIZE)
        uring.prep_sqe(
            sqe,
            0,
            uring.IORING_OP_URING_CMD,
            fuse_fd,
            cmd_op=FuseUringCmd.FUSE_IO_URING_CMD_COMMIT_AND_FETCH,
            user_data=index,
            cmd=_cmd_req(qid),
        )
        self.commit_sqe = bytes(sqe)  # commit_id is filled in per reply

    def message(self) -> memoryview:
        """The request in this entry, laid out as one /dev/fuse read."""
        h32, hv = self.h32, self.hv
        length, payload = h32[0], h32[_PAYLOAD_SZ]
        op = length - _IN_HEADER - payload
        if payload == 0 and 0 <= op <= _OP_IN:
            hv[_JOIN:_OP_IN] = hv[:_IN_HEADER]
            return hv[_JOIN : _OP_IN + op]
        if not 0 <= op <= _OP_IN or payload > len(self.pv):
            # not laid out as fuse_uring_args_to_ring() does: the codec sees the header
            # alone, whose length does not match, and the request gets EIO
            return hv[:_IN_HEADER]
        return memoryview(
            b"".join((hv[:_IN_HEADER], hv[_OP_IN : _OP_IN + op], self.pv[:payload]))
        )

    def close(self) -> None:
        """Unmap the buffers (left to the garbage collector if a view is still alive)."""
        self.h32.release()
        self.hv.release()
        self.pv.release()
        del self._anchor
        try:
            self.map.close()
        except BufferError:
            pass


def _cmd_req(qid: int) -> bytes:
    return FuseUringCmdReq(0, 0, qid, bytes(6)).pack()


class UringTransport:
    """FUSE over io_uring: entries registered per CPU queue, one ring for all of them.

    Create it before answering INIT (io_uring_setup can fail, and once INIT has
    accepted FUSE_OVER_IO_URING the kernel holds every request until each queue has an
    entry), then call `register` right after the INIT reply. A request parked by the
    session keeps its entry until answered; when fewer than ``MIN_FREE_PER_QUEUE``
    entries of a queue are left, another one is registered. Limit: requests that
    arrive on one CPU in a burst larger than its free entries wait in the kernel until
    the next reply on that queue (fs/fuse/dev_uring.c fetches queued requests only on
    commit), so a burst of more than ``MIN_FREE_PER_QUEUE`` requests that all block
    holds the rest until one of them is answered or another request comes.
    """

    name = "uring"

    def __init__(self, fd: int, dev: DevFuseTransport) -> None:
        self.fd = fd
        self.dev = dev  # FORGET, INTERRUPT and notifications
        self.ring = uring.Ring(_SQ_ENTRIES, _SQ_ENTRIES * 2)
        self.entries: list[RingEntry] = []
        self.queues = possible_cpus()
        self._free = [0] * self.queues  # entries with the kernel, per queue
        self._payload = 0
        self._in_loop = False  # replies made now are submitted by the loop's next enter
        self._dev_buf = bytearray(dev.buffer_size)

    def register(self, max_payload: int) -> None:
        """Give the kernel ``ENTRIES_PER_QUEUE`` entries on every queue, and watch
        /dev/fuse. ``max_payload`` is the ring's max_payload_sz (fuse_uring_create)."""
        self._payload = max_payload
        for qid in range(self.queues):
            for _ in range(ENTRIES_PER_QUEUE):
                self._add_entry(qid)
        self._poll_dev()
        self._submit()

    def _add_entry(self, qid: int) -> None:
        ent = RingEntry(len(self.entries), qid, self._payload, self.fd)
        self.entries.append(ent)
        self._push(
            uring.IORING_OP_URING_CMD,
            cmd_op=FuseUringCmd.FUSE_IO_URING_CMD_REGISTER,
            addr=ctypes.addressof(ent.iov),
            length=2,
            user_data=ent.index,
            cmd=_cmd_req(qid),
        )
        self._free[qid] += 1

    def _poll_dev(self) -> None:
        self._push(
            uring.IORING_OP_POLL_ADD,
            length=uring.IORING_POLL_ADD_MULTI,
            op_flags=select.POLLIN,
            user_data=_POLL_TOKEN,
        )

    def _push(self, opcode: int, **fields: int | bytes) -> None:
        ring = self.ring
        if ring.pending >= ring.sq_entries:
            self._submit()
        slot = ring.next_slot()
        uring.prep_sqe(ring.sqes, slot * uring.SQE_SIZE, opcode, self.fd, **fields)  # type: ignore[arg-type]
        ring.push(slot)

    def _submit(self) -> None:
        while self.ring.pending:
            err = self.ring.enter()
            if err not in (0, errno.EINTR, errno.EAGAIN, errno.EBUSY):
                raise OSError(err, f"io_uring_enter: {os.strerror(err)}")

    # --- replies ------------------------------------------------------------------------

    def reply(self, token: int, data: bytes) -> None:
        """Commit ``data`` (a fuse_out_header and the out arguments) into the entry
        ``token``; the same command fetches the entry's next request."""
        if token == DEV:
            self.dev.write(data)
            return
        ent = self.entries[token]
        if not ent.busy:
            log.warning("second reply to ring entry %d dropped", token)
            return
        n = len(data) - _OUT_HEADER
        ent.hv[:_OUT_HEADER] = data[:_OUT_HEADER]
        if n > len(ent.pv):
            log.warning("reply of %d bytes exceeds the ring payload: EIO instead", n)
            ent.hv[4:8] = (-errno.EIO).to_bytes(4, "little", signed=True)
            n = 0
        elif n:
            ent.pv[:n] = memoryview(data)[_OUT_HEADER:]
        ent.h32[_PAYLOAD_SZ] = n
        ring = self.ring
        if ring.pending >= ring.sq_entries:
            self._submit()
        slot = ring.next_slot()
        off = slot * uring.SQE_SIZE
        ring.sqes[off : off + uring.SQE_SIZE] = ent.commit_sqe
        ring.sqes64[off // 8 + _COMMIT_ID] = int.from_bytes(data[8:16], "little")
        ring.push(slot)
        ent.busy = False
        self._free[ent.qid] += 1
        if not self._in_loop:
            self._submit()

    def notify(self, data: bytes) -> None:
        # fuse_uring_out_header_has_err(): no notifications through the ring
        self.dev.write(data)

    # --- the loop ------------------------------------------------------------------------

    async def run(self, handle: Handler) -> None:
        """Serve until the kernel tears the ring down (unmount) or DESTROY."""
        ring = self.ring
        entries = self.entries
        free = self._free
        wait_readable = trio.lowlevel.wait_readable
        streak = 0
        while True:
            cqes = ring.completions()
            if not cqes:
                if ring.pending:
                    self._submit()
                streak = 0
                if not ring.ready():
                    await wait_readable(ring.fd)
                continue
            self._in_loop = True
            try:
                for user_data, res, flags in cqes:
                    if user_data == _POLL_TOKEN:
                        if self._serve_dev(handle, res, flags):
                            return
                        continue
                    ent = entries[user_data]
                    free[ent.qid] -= 1
                    if res < 0:
                        if -res in _GONE:
                            return
                        # the entry is lost to the kernel (a failed commit): replace it
                        log.warning("ring entry %d: %s", ent.index, os.strerror(-res))
                        self._add_entry(ent.qid)
                        continue
                    ent.busy = True
                    if handle(ent.message(), user_data):
                        return
                    if ent.busy and free[ent.qid] < MIN_FREE_PER_QUEUE:
                        self._add_entry(ent.qid)  # parked: keep the queue served
            finally:
                self._in_loop = False
            streak += len(cqes)
            if streak >= YIELD_EVERY:
                streak = 0
                self._submit()
                await trio.lowlevel.checkpoint()

    def _serve_dev(self, handle: Handler, res: int, flags: int) -> bool:
        """/dev/fuse is readable: serve what is there (FORGET, INTERRUPT). True when the
        filesystem is gone."""
        if res < 0:
            if -res in _GONE:
                return True
            log.warning("poll on /dev/fuse: %s", os.strerror(-res))
        if not flags & uring.IORING_CQE_F_MORE:
            self._poll_dev()  # the multishot poll ended: arm it again
        buf = self._dev_buf
        while True:
            try:
                n = self.dev.read(buf)
            except BlockingIOError:
                return False
            if n is None:
                return True
            if handle(memoryview(buf)[:n], DEV):
                return True

    def close(self) -> None:
        """Close the ring (the kernel cancels the entries it holds) and free the
        entries' buffers."""
        self.ring.close()
        for ent in self.entries:
            ent.close()
        self.entries.clear()
