"""The session (handshake, the serve loop, dispatch) against a FakeKernel: a
socketpair(AF_UNIX, SOCK_SEQPACKET) standing in for /dev/fuse, so no root, no mount.

The test plays the kernel: it sends the requests a kernel would (built from the request
structs, not from the daemon's decoder) and checks the reply bytes, including the
asynchronous ones: a parked ioctl answered EINTR after FUSE_INTERRUPT, a poll wake-up
notification, and DESTROY ending the loop. Caller memory is this test process's own,
reached through the session's real /proc/PID/mem and process_vm_writev path.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from tests.fake_kernel import FakeKernel, header, parse_dirents
from vfiofs.abi import fuse_kernel as k
from vfiofs.abi.fuse_kernel import FuseOpcode as Op
from vfiofs.abi.ioctl import _IO
from vfiofs.errors import KernelError
from vfiofs.fs.node import DeviceNode, Directory, Symlink
from vfiofs.fs.tree import Tree
from vfiofs.fuse.connection import DEFAULT_WANT, FuseConnection
from vfiofs.session.peer import FdResolver, ProcessTable
from vfiofs.session.serve import MAX_WRITE, FuseSession
from vfiofs.uaccess import Caller
from vfiofs.waitqueue import WaitQueue, WouldBlock

NOOP = _IO(ord("T"), 0)
SWAP = _IO(ord("T"), 1)  # reverses 8 bytes at arg, returns 42
BLOCK = _IO(ord("T"), 2)  # waits for Gadget.ready
POLLIN = 0x1


@attrs.define(eq=False)
class Gadget:
    queue: WaitQueue = attrs.Factory(WaitQueue)
    ready: bool = False
    released: bool = False

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        return b"abcdefgh"[offset : offset + size]

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        return len(data)

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        if cmd == NOOP:
            return 0
        if cmd == SWAP:
            caller.copy_to_user(arg, caller.copy_from_user(arg, 8)[::-1])
            return 42
        if cmd == BLOCK:
            if not self.ready:
                raise WouldBlock(self.queue)
            return 1
        raise KernelError(errno.ENOTTY)

    def poll(self, caller: Caller) -> tuple[int, WaitQueue | None]:
        return (POLLIN if self.ready else 0), self.queue

    def release(self) -> None:
        self.released = True


@attrs.define(eq=False)
class Fixture:
    kernel: FakeKernel
    session: FuseSession
    files: list[Gadget]
    procs: ProcessTable
    init: k.FuseInitOut | None = None

    @classmethod
    def make(cls) -> Fixture:
        kernel = FakeKernel()
        files: list[Gadget] = []
        procs = ProcessTable()
        session = FuseSession(
            tree(files),
            "/nonexistent",
            kernel.daemon.fileno(),
            FuseConnection(max_write=MAX_WRITE),
            procs,
            FdResolver(0),
            transport_name="dev",  # a socketpair stands in for /dev/fuse: no io_uring
        )
        return cls(kernel, session, files, procs)

    def close(self) -> None:
        """What `serve()` does after its loop: release every handle; then the fds."""
        self.session.dispatcher.release_all()
        self.procs.close()
        self.kernel.close()

    async def lookup(self, name: str) -> int:
        hdr, body = await self.kernel.call(
            Op.FUSE_LOOKUP, nodeid=k.FUSE_ROOT_ID, name=name.encode()
        )
        assert hdr.error == 0 and isinstance(body, tuple)
        nodeid: int = body[0].nodeid
        return nodeid

    async def open(self, nodeid: int) -> int:
        hdr, body = await self.kernel.call(
            Op.FUSE_OPEN, k.FuseOpenIn(os.O_RDWR, 0), nodeid=nodeid
        )
        assert hdr.error == 0 and isinstance(body, tuple)
        fh: int = body[0].fh
        return fh


def tree(files: list[Gadget]) -> Tree:
    def opener(caller: Caller, flags: int) -> Gadget:
        files.append(Gadget())
        return files[-1]

    root = Directory()
    root.add("file", DeviceNode(mode=stat.S_IFREG | 0o666, opener=opener))
    root.add("link", Symlink(target="file"))
    return Tree(root)


async def serve_session(
    session: FuseSession,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """What `serve()` does once mounted: handshake, then the loop."""
    await session.handshake()
    async with trio.open_nursery() as nursery:
        task_status.started()
        await session.run(nursery)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running(minor: int = k.FUSE_KERNEL_MINOR_VERSION) -> AsyncIterator[Fixture]:
    """A session serving over a FakeKernel, INIT answered; cancelled on exit."""
    fx = Fixture.make()
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve_session, fx.session)
                fx.init = await fx.kernel.init(minor)
                yield fx
                nursery.cancel_scope.cancel()
    finally:
        fx.close()


async def test_handshake_negotiates_what_both_sides_have() -> None:
    async with running() as fx:
        out = fx.init
        assert out is not None
        assert (out.major, out.minor) == (7, k.FUSE_KERNEL_MINOR_VERSION)
        assert out.max_write == MAX_WRITE and out.max_pages == MAX_WRITE // 4096
        # the kernel offered everything (flags and flags2): we get what we want
        assert out.flags | (out.flags2 << 32) == DEFAULT_WANT
        assert out.max_readahead == 1 << 17


async def test_handshake_with_an_old_kernel() -> None:
    async with running(minor=31) as fx:
        out = fx.init
        assert out is not None
        assert out.minor == 31 and out.flags2 == 0
        assert not out.flags & k.FuseInitFlags.FUSE_INIT_EXT
        assert out.flags == DEFAULT_WANT & ((1 << 30) - 1)


async def test_lookup_open_read_write_ioctl_release() -> None:
    async with running() as fx:
        kern = fx.kernel
        nodeid = await fx.lookup("file")
        hdr, body = await kern.call(
            Op.FUSE_GETATTR, k.FuseGetattrIn(0, 0, 0), nodeid=nodeid
        )
        assert hdr.error == 0 and isinstance(body, tuple)
        assert body[1].mode == stat.S_IFREG | 0o666 and body[1].ino == nodeid

        fh = await fx.open(nodeid)
        hdr, body = await kern.call(
            Op.FUSE_READ, k.FuseReadIn(fh, 2, 4, 0, 0, 0, 0), nodeid=nodeid
        )
        assert (hdr.error, body) == (0, b"cdef")
        hdr, body = await kern.call(
            Op.FUSE_WRITE,
            k.FuseWriteIn(fh, 0, 3, 0, 0, 0, 0),
            nodeid=nodeid,
            data=b"xyz",
        )
        assert hdr.error == 0 and isinstance(body, tuple) and body[0].size == 3

        hdr, body = await kern.call(
            Op.FUSE_IOCTL, k.FuseIoctlIn(fh, 0, NOOP, 0, 0, 0), nodeid=nodeid
        )
        assert hdr.error == 0 and isinstance(body, tuple) and body[0].result == 0

        # the handler reaches the caller's memory: ours, by our pid in the header
        buf = ctypes.create_string_buffer(b"12345678", 8)
        hdr, body = await kern.call(
            Op.FUSE_IOCTL,
            k.FuseIoctlIn(fh, 0, SWAP, ctypes.addressof(buf), 0, 0),
            nodeid=nodeid,
        )
        assert hdr.error == 0 and isinstance(body, tuple) and body[0].result == 42
        assert buf.raw == b"87654321"

        hdr, body = await kern.call(
            Op.FUSE_IOCTL,
            k.FuseIoctlIn(fh, 0, _IO(ord("T"), 99), 0, 0, 0),
            nodeid=nodeid,
        )
        assert hdr.error == -errno.ENOTTY

        assert not fx.files[0].released
        hdr, _ = await kern.call(
            Op.FUSE_RELEASE, k.FuseReleaseIn(fh, os.O_RDWR, 0, 0), nodeid=nodeid
        )
        assert hdr.error == 0 and fx.files[0].released


async def test_directory_symlink_and_errors() -> None:
    async with running() as fx:
        kern = fx.kernel
        hdr, body = await kern.call(
            Op.FUSE_OPENDIR, k.FuseOpenIn(os.O_RDONLY, 0), nodeid=k.FUSE_ROOT_ID
        )
        assert hdr.error == 0 and isinstance(body, tuple)
        fh = body[0].fh
        hdr, body = await kern.call(
            Op.FUSE_READDIR,
            k.FuseReadIn(fh, 0, 4096, 0, 0, 0, 0),
            nodeid=k.FUSE_ROOT_ID,
        )
        assert hdr.error == 0 and isinstance(body, bytes)
        assert [d[3] for d in parse_dirents(body)] == [b".", b"..", b"file", b"link"]

        link = await fx.lookup("link")
        hdr, body = await kern.call(Op.FUSE_READLINK, nodeid=link)
        assert (hdr.error, body) == (0, b"file")

        hdr, _ = await kern.call(Op.FUSE_LOOKUP, nodeid=k.FUSE_ROOT_ID, name=b"nope")
        assert hdr.error == -errno.ENOENT

        # an opcode outside the table (FUSE_DO_READDIRPLUS is never negotiated, and
        # vfiofs creates nothing): ENOSYS, and the loop goes on
        unique = kern.next_unique()
        mkdir = k.FuseInHeader(48, Op.FUSE_MKDIR, unique, 1, 0, 0, os.getpid(), 0, 0)
        await kern.send_raw(mkdir.pack() + bytes(8))
        reply = k.FuseOutHeader.unpack_from(await kern.receive())
        assert (reply.unique, reply.error) == (unique, -errno.ENOSYS)


async def test_forget_gets_no_reply_and_order_is_kept() -> None:
    async with running() as fx:
        nodeid = await fx.lookup("file")
        unique = fx.kernel.next_unique()
        await fx.kernel.send(
            _request(Op.FUSE_FORGET, unique, nodeid, k.FuseForgetIn(1))
        )
        # the next message is the reply to the next request, not to FORGET
        hdr, _ = await fx.kernel.call(Op.FUSE_STATFS, nodeid=k.FUSE_ROOT_ID)
        assert hdr.error == 0


async def test_interrupt_answers_a_parked_ioctl_with_eintr() -> None:
    async with running() as fx:
        kern = fx.kernel
        nodeid = await fx.lookup("file")
        fh = await fx.open(nodeid)
        unique = kern.next_unique()
        await kern.send(
            _request(
                Op.FUSE_IOCTL, unique, nodeid, k.FuseIoctlIn(fh, 0, BLOCK, 0, 0, 0)
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        assert unique in fx.session.inflight  # parked, waiting on the file's queue
        await kern.send(
            _request(Op.FUSE_INTERRUPT, unique + 1, 0, k.FuseInterruptIn(unique))
        )
        reply = k.FuseOutHeader.unpack_from(await kern.receive())
        assert (reply.unique, reply.error, reply.len) == (unique, -errno.EINTR, 16)
        assert unique not in fx.session.inflight
        # the file's wait queue holds nobody any more
        assert len(fx.files[0].queue) == 0


async def test_parked_ioctl_completes_when_woken() -> None:
    async with running() as fx:
        kern = fx.kernel
        nodeid = await fx.lookup("file")
        fh = await fx.open(nodeid)
        unique = kern.next_unique()
        await kern.send(
            _request(
                Op.FUSE_IOCTL, unique, nodeid, k.FuseIoctlIn(fh, 0, BLOCK, 0, 0, 0)
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        # other requests are served while it waits
        hdr, _ = await kern.call(Op.FUSE_STATFS, nodeid=k.FUSE_ROOT_ID)
        assert hdr.error == 0
        fx.files[0].ready = True
        fx.files[0].queue.wake()
        raw = await kern.receive()
        reply = k.FuseOutHeader.unpack_from(raw)
        assert (reply.unique, reply.error) == (unique, 0)
        assert k.FuseIoctlOut.unpack_from(raw, 16).result == 1


async def test_poll_schedules_a_wakeup_notification() -> None:
    async with running() as fx:
        kern = fx.kernel
        nodeid = await fx.lookup("file")
        fh = await fx.open(nodeid)
        hdr, body = await kern.call(
            Op.FUSE_POLL,
            k.FusePollIn(fh, 77, k.FUSE_POLL_SCHEDULE_NOTIFY, POLLIN),
            nodeid=nodeid,
        )
        assert hdr.error == 0 and isinstance(body, tuple) and body[0].revents == 0
        fx.files[0].ready = True
        fx.files[0].queue.wake()
        raw = await kern.receive()
        note = k.FuseOutHeader.unpack_from(raw)
        assert (note.len, note.error, note.unique) == (
            24,
            k.FuseNotifyCode.FUSE_NOTIFY_POLL,
            0,
        )
        assert k.FuseNotifyPollWakeupOut.unpack_from(raw, 16).kh == 77


async def test_malformed_body_is_eio_and_the_loop_goes_on() -> None:
    async with running() as fx:
        kern = fx.kernel
        unique = kern.next_unique()
        hdr = k.FuseInHeader(48, Op.FUSE_READ, unique, 1, 0, 0, os.getpid(), 0, 0)
        await kern.send_raw(hdr.pack() + bytes(8))  # fuse_read_in is 40 bytes
        reply = k.FuseOutHeader.unpack_from(await kern.receive())
        assert (reply.unique, reply.error) == (unique, -errno.EIO)
        hdr2, _ = await kern.call(Op.FUSE_STATFS, nodeid=k.FUSE_ROOT_ID)
        assert hdr2.error == 0


async def test_destroy_ends_the_loop_and_release_all_closes_files() -> None:
    fx = Fixture.make()
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve_session, fx.session)
                await fx.kernel.init()
                await fx.open(await fx.lookup("file"))
                hdr, body = await fx.kernel.call(Op.FUSE_DESTROY)
                assert (hdr.error, hdr.len, body) == (0, 16, b"")
            # serve_session returned by itself: the nursery closed without a cancel
        assert fx.session.conn.state.value == "destroyed"
        assert not fx.files[0].released
    finally:
        fx.close()
    assert fx.files[0].released


async def test_cancel_with_a_parked_request_sends_nothing_more() -> None:
    fx = Fixture.make()
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve_session, fx.session)
                await fx.kernel.init()
                nodeid = await fx.lookup("file")
                fh = await fx.open(nodeid)
                ioctl = k.FuseIoctlIn(fh, 0, BLOCK, 0, 0, 0)
                unique = fx.kernel.next_unique()
                await fx.kernel.send(_request(Op.FUSE_IOCTL, unique, nodeid, ioctl))
                await trio.testing.wait_all_tasks_blocked()
                assert unique in fx.session.inflight
                nursery.cancel_scope.cancel()  # SIGTERM does this in serve()
        assert not fx.session.inflight
        with pytest.raises(BlockingIOError):  # no reply, no EINTR: the mount is going
            fx.kernel.receive_nowait()
    finally:
        fx.close()
    assert fx.files[0].released
    assert len(fx.files[0].queue) == 0


def _request(opcode: int, unique: int, nodeid: int, arg: Any) -> Any:
    from vfiofs.fuse._opcodes import OPCODES

    return OPCODES[opcode].cls(header(opcode, unique, nodeid), arg, b"", b"")


@pytest.fixture(autouse=True)
def _no_stray_fds() -> Any:
    before = set(os.listdir("/proc/self/fd"))
    yield
    leaked = set(os.listdir("/proc/self/fd")) - before
    assert not leaked, f"fds left open: {leaked}"
