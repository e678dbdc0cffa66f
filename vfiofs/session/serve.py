"""The serve loop: mount, read one request per read(2), dispatch, write the reply.

The reader reads first and waits for readability only when nothing is queued (awaiting
before every read costs twice the C server's time per request). Requests are handled
inline because the core is synchronous; only a request that must wait (`WouldBlock`) or
needs a caller's fds resolved (`NeedFds`) gets a task of its own, under a cancel scope that
FUSE_INTERRUPT cancels (the caller then gets EINTR). The loop ends cleanly when the kernel
says the filesystem is gone (ENODEV on read).

The reader must never touch its own mount (design.md §10): fd resolution runs in a worker
thread, and the mount's device number comes from /proc/self/mountinfo, not stat(2).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO, TypeVar

import attrs
import trio

from ..errors import ProtocolError
from ..fs.tree import Tree
from ..fuse import requests as rq
from ..fuse._opcodes import describe
from ..fuse.connection import FuseConnection
from ..uaccess import NeedFds
from ..waitqueue import WouldBlock
from .dispatch import Dispatcher, Parked
from .mount import MountOptions, mount, unmount
from .peer import FdResolver, ProcessTable, RequestCaller, file_ref

log = logging.getLogger("vfiofs.serve")

MAX_WRITE = 1 << 20
# The kernel refuses reads smaller than one request: header + the largest fixed args
# (fuse_write_in) + max_write.
READ_BUFFER = MAX_WRITE + 4096
YIELD_EVERY = 32  # requests served back to back before other tasks get a turn

T = TypeVar("T")


def mount_device_number(target: str) -> int:
    """st_dev of the mount at the real path ``target``, from /proc/self/mountinfo (stat
    would ask ourselves, and before INIT it would hang)."""
    dev = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == target:
                major, minor = fields[2].split(":")
                dev = os.makedev(int(major), int(minor))
    if dev is None:
        raise OSError(errno.ENOENT, f"{target} is not mounted")
    return dev


@attrs.define(eq=False)
class FuseSession:
    """One mounted filesystem being served."""

    tree: Tree
    mountpoint: str
    fd: int
    conn: FuseConnection
    procs: ProcessTable
    resolver: FdResolver
    trace: TextIO | None = None
    token: trio.lowlevel.TrioToken = attrs.field(
        factory=trio.lowlevel.current_trio_token
    )
    inflight: dict[int, trio.CancelScope] = attrs.Factory(dict)
    dispatcher: Dispatcher = attrs.field(init=False)
    _receive: Callable[[memoryview], Any] = attrs.field(init=False)
    _dispatch: Callable[[Any], bytes | None] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.dispatcher = Dispatcher(self.tree, self.conn, self.procs, self.write)
        self.dispatcher.tracing = self.trace is not None
        self._receive = self.conn.receive  # bound once: this is every request
        self._dispatch = self.dispatcher.dispatch

    @property
    def mount_dev(self) -> int:
        return self.resolver.mount_dev

    def write(self, data: bytes) -> None:
        """Write one reply or notification to /dev/fuse."""
        try:
            os.write(self.fd, data)
        except OSError as e:
            self._write_failed(e)

    @staticmethod
    def _write_failed(e: OSError) -> None:
        if e.errno == errno.ENOENT:  # the request was interrupted and is gone
            log.debug("reply to a request that is gone")
        elif e.errno in (errno.ENODEV, errno.EBADF):
            log.debug("reply after unmount")
        else:
            raise e

    def call_in_core(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the core's thread (from any other thread), return its result."""
        return trio.from_thread.run_sync(fn, trio_token=self.token)

    async def _read(self, buf: bytearray) -> int | None:
        """One request into ``buf``; None when the filesystem is gone."""
        while True:
            try:
                return os.readv(self.fd, [buf])
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.fd)
            except OSError as e:
                if e.errno == errno.ENOENT:  # interrupted before we read it
                    continue
                if e.errno in (errno.ENODEV, errno.EBADF):
                    return None
                raise

    async def handshake(self) -> None:
        """Answer INIT."""
        buf = bytearray(READ_BUFFER)
        n = await self._read(buf)
        if n is None:
            raise OSError(errno.ENODEV, "unmounted before INIT")
        req = self.conn.receive(memoryview(buf)[:n])
        if not isinstance(req, rq.Init):
            raise ProtocolError(f"expected INIT, got {req!r}")
        self.write(self.conn.init_reply(req))

    async def run(self, nursery: trio.Nursery) -> None:
        """Serve until the filesystem is unmounted (or DESTROY).

        The loop body is written out for speed: one readv per request, and the wait for
        readability only when the read would block.
        """
        buf = bytearray(READ_BUFFER)
        bufs = [buf]
        view = memoryview(buf)
        fd = self.fd
        readv = os.readv
        handle = self.handle
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
            if handle(view[:n], nursery):
                return
            streak += 1
            if streak >= YIELD_EVERY:
                streak = 0
                await trio.lowlevel.checkpoint()

    def handle(self, data: memoryview, nursery: trio.Nursery) -> bool:
        """Serve one request; True when the session is over (DESTROY)."""
        if self.trace:
            return self._handle_traced(data, nursery)
        try:
            req = self._receive(data)
        except ProtocolError as e:
            log.error("unparseable message from the kernel: %s", e)
            return False
        cls = type(req)
        if cls is rq.Interrupt:
            self._interrupt(req)
            return False
        try:
            reply = self._dispatch(req)
        except Parked as parked:
            nursery.start_soon(self._finish, parked)
            return False
        if reply is not None:
            try:
                os.write(self.fd, reply)
            except OSError as e:
                self._write_failed(e)
        return cls is rq.Destroy

    def _interrupt(self, req: rq.Interrupt) -> None:
        scope = self.inflight.get(req.arg.unique)
        if scope is not None:
            scope.cancel()

    def _handle_traced(self, data: memoryview, nursery: trio.Nursery) -> bool:
        t0 = time.perf_counter_ns()
        try:
            req = self.conn.receive(data)
        except ProtocolError as e:
            log.error("unparseable message from the kernel: %s", e)
            return False
        if isinstance(req, rq.Interrupt):
            self._interrupt(req)
            return False
        try:
            reply = self.dispatcher.dispatch(req)
        except Parked as parked:
            nursery.start_soon(self._finish, parked)
            return False
        if reply is not None:
            self.write(reply)
        self._trace(req, reply, t0)
        return isinstance(req, rq.Destroy)

    async def _finish(self, parked: Parked) -> None:
        """Complete a request that waits or needs fds; EINTR if interrupted."""
        req, caller = parked.req, parked.caller
        t0 = time.perf_counter_ns() if self.trace else 0
        reply: bytes | None = None
        with trio.CancelScope() as scope:
            self.inflight[req.unique] = scope
            try:
                while reply is None:
                    await self._wait(parked.reason, caller)
                    try:
                        reply = self.dispatcher.finish(parked)
                    except Parked as again:
                        parked = again
            except OSError as e:
                reply = self.conn.reply_error(req, e.errno or errno.EIO)
            finally:
                del self.inflight[req.unique]
        if scope.cancelled_caught:
            reply = self.conn.reply_error(req, errno.EINTR)
        caller.discard_unused()
        assert reply is not None
        self.write(reply)
        if self.trace:
            self._trace(req, reply, t0)

    async def _wait(self, reason: WouldBlock | NeedFds, caller: RequestCaller) -> None:
        if isinstance(reason, WouldBlock):
            event = trio.Event()
            key = reason.queue.add(event.set)
            try:
                await event.wait()
            finally:
                reason.queue.remove(key)
            return
        tgid = caller.tgid
        found = await trio.to_thread.run_sync(self.resolver.resolve, tgid, reason.fds)
        if caller.resolved is None:
            caller.resolved = {}
        for fd, f in found.items():
            caller.resolved[fd] = file_ref(f, self.tree.handles)  # type: ignore[arg-type]

    def _trace(self, req: Any, reply: bytes | None, t0: int) -> None:
        assert self.trace is not None
        us = (time.perf_counter_ns() - t0) / 1000
        result = "-"
        if reply is not None:
            err = int.from_bytes(reply[4:8], "little", signed=True)
            if err:
                result = f"-{errno.errorcode.get(-err, str(-err))}"
            elif isinstance(req, rq.Ioctl) and len(reply) >= 20:
                result = str(int.from_bytes(reply[16:20], "little", signed=True))
            else:
                result = "0"
        path = self.tree.path(req.header.nodeid) if req.header.nodeid else ""
        note = self.dispatcher.note
        print(
            f"{req.header.pid:>7} {describe(req)} {path} {note} = {result} <{us:.0f}us>",
            file=self.trace,
            flush=True,
        )


async def _reap_exited(procs: ProcessTable) -> None:
    """Close the memory handles of processes that have exited, once a second."""
    while True:
        await trio.sleep(1)
        procs.reap()


async def serve(
    tree: Tree,
    mountpoint: str,
    *,
    options: MountOptions | None = None,
    trace: TextIO | None = None,
    on_ready: Callable[[FuseSession], None] | None = None,
    task_status: trio.TaskStatus[FuseSession] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Mount ``tree`` at ``mountpoint`` and serve it until unmounted or cancelled.

    Calls ``task_status.started(session)`` once INIT is answered, so
    ``await nursery.start(serve, ...)`` returns when the mount is usable. On cancellation
    (SIGINT, SIGTERM) the filesystem is unmounted and every open handle released.
    """
    conn = FuseConnection(max_write=MAX_WRITE)
    # realpath before mounting: afterwards it would stat our own mount from its reader
    mountpoint = os.path.realpath(mountpoint)  # noqa: ASYNC240
    fd = mount(mountpoint, options or MountOptions())
    session: FuseSession | None = None
    procs = ProcessTable()
    try:
        resolver = FdResolver(mount_device_number(mountpoint))
        session = FuseSession(tree, mountpoint, fd, conn, procs, resolver, trace)
        async with trio.open_nursery() as nursery:
            await session.handshake()
            nursery.start_soon(_reap_exited, procs)
            if on_ready is not None:
                on_ready(session)
            task_status.started(session)
            await session.run(nursery)
            nursery.cancel_scope.cancel()
    finally:  # nothing here awaits, so cancellation cannot cut it short
        try:
            unmount(mountpoint)
        except OSError as e:
            log.warning("%s", e)
        os.close(fd)
        if session is not None:
            session.dispatcher.release_all()
        procs.close()


@contextlib.contextmanager
def take_signals(handler: Callable[[int], None], *signums: int) -> Iterator[None]:
    """Until the block ends, ``signums`` call ``handler(signum)`` on the trio thread
    instead of their default actions (KeyboardInterrupt, death).

    The signals are unblocked on entry and the previous mask and handlers come back on
    exit, so a caller that blocked them earlier (the CLI does, before it builds anything)
    holds a signal that arrives too early until it can be handled here, and one that
    arrives after the block until the process exits. Unlike `trio.open_signal_receiver`,
    nothing is redelivered at exit: a signal taken here is handled here.
    """
    token = trio.lowlevel.current_trio_token()

    def on_signal(signum: int, frame: object) -> None:
        # a Python signal handler may run between any two bytecodes, also inside trio:
        # hand the work to the trio thread's next scheduling point
        token.run_sync_soon(handler, signum)

    old = {s: signal.signal(s, on_signal) for s in signums}
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, signums)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for s, h in old.items():
            signal.signal(s, h)


async def serve_until_signalled(
    tree: Tree,
    mountpoint: str,
    **kwargs: Any,
) -> None:
    """`serve` until unmounted, SIGINT or SIGTERM; then unmount cleanly.

    The signals are taken before the mount exists and given back after it is gone, so a
    signal at any moment in between (before INIT, during it, mid-request) cancels the
    session: `serve` unmounts and this returns normally.
    """
    with trio.CancelScope() as scope:

        def stop(signum: int) -> None:
            log.info("%s: unmounting %s", signal.Signals(signum).name, mountpoint)
            scope.cancel()

        with take_signals(stop, signal.SIGINT, signal.SIGTERM):
            await serve(tree, mountpoint, **kwargs)
