"""The serve loop: mount, take each request from the transport, dispatch, reply.

Requests come through a `transport` (read/write on /dev/fuse, or FUSE over io_uring;
INIT always comes through /dev/fuse and decides which). Requests are handled inline
because the core is synchronous; only a request that must wait (`WouldBlock`) or needs a
caller's fds resolved (`NeedFds`) gets a task of its own, under a cancel scope that
FUSE_INTERRUPT cancels (the caller then gets EINTR). The loop ends cleanly when the kernel
says the filesystem is gone.

The reader must never touch its own mount (docs/internals.md): fd resolution runs in a worker
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

from ..abi.fuse_kernel import FUSE_MIN_READ_BUFFER, FuseInHeader, FuseInitFlags
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
from .transport import (
    DevFuseTransport,
    Transport,
    UringTransport,
    uring_unavailable,
)

log = logging.getLogger("vfiofs.serve")

MAX_WRITE = 1 << 20
TRANSPORTS = ("auto", "uring", "dev")


def default_transport() -> str:
    """The transport asked for by ``VFIOFS_TRANSPORT`` (``auto`` when unset): every
    daemon honours it, so a whole test run can be switched to one transport."""
    name = os.environ.get("VFIOFS_TRANSPORT", "auto")
    if name not in TRANSPORTS:
        raise ValueError(f"VFIOFS_TRANSPORT={name}: expected one of {TRANSPORTS}")
    return name


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
    # "dev", "uring" or "auto" (io_uring when the kernel offers it); decided at INIT
    transport_name: str = attrs.field(factory=default_transport)
    token: trio.lowlevel.TrioToken = attrs.field(
        factory=trio.lowlevel.current_trio_token
    )
    inflight: dict[int, trio.CancelScope] = attrs.Factory(dict)
    dispatcher: Dispatcher = attrs.field(init=False)
    dev: DevFuseTransport = attrs.field(init=False)
    transport: Transport = attrs.field(init=False)
    _nursery: trio.Nursery | None = None
    _receive: Callable[[memoryview], Any] = attrs.field(init=False)
    _dispatch: Callable[[Any], bytes | None] = attrs.field(init=False)
    _reply: Callable[[int, bytes], None] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.transport_name not in TRANSPORTS:
            raise ValueError(f"transport {self.transport_name!r}: not in {TRANSPORTS}")
        self.dispatcher = Dispatcher(self.tree, self.conn, self.procs, self.write)
        self.dispatcher.tracing = self.trace is not None
        self.dev = DevFuseTransport(self.fd, self.conn.max_write)
        self.transport = self.dev  # until INIT says otherwise
        self._receive = self.conn.receive  # bound once: this is every request
        self._dispatch = self.dispatcher.dispatch
        self._reply = self.dev.reply

    @property
    def mount_dev(self) -> int:
        return self.resolver.mount_dev

    def write(self, data: bytes) -> None:
        """Send a notification (poll wake-ups) to the kernel."""
        self.transport.notify(data)

    def call_in_core(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the core's thread (from any other thread), return its result."""
        return trio.from_thread.run_sync(fn, trio_token=self.token)

    async def handshake(self) -> None:
        """Answer INIT, and pick the transport: io_uring when asked for (or ``auto``)
        and the kernel offers FUSE_OVER_IO_URING."""
        buf = bytearray(self.dev.buffer_size)
        n = await self.dev.receive(buf)
        if n is None:
            raise OSError(errno.ENODEV, "unmounted before INIT")
        req = self.conn.receive(memoryview(buf)[:n])
        if not isinstance(req, rq.Init):
            raise ProtocolError(f"expected INIT, got {req!r}")
        uring = self._uring_for(req)
        if uring is not None:
            self.conn.want |= FuseInitFlags.FUSE_OVER_IO_URING
        try:
            self.dev.write(self.conn.init_reply(req))
            if uring is not None:
                if not self.conn.flags & FuseInitFlags.FUSE_OVER_IO_URING:
                    raise OSError(errno.EPROTO, "INIT did not negotiate io_uring")
                uring.register(self._max_payload())
        except BaseException:
            if uring is not None:
                uring.close()
            raise
        if uring is not None:
            self.transport = uring
            self._reply = uring.reply
        log.info("serving %s over %s", self.mountpoint, self.transport.name)

    def _uring_for(self, init: rq.Init) -> UringTransport | None:
        """The io_uring transport, if it is wanted and possible (set up before INIT is
        answered: afterwards the kernel waits for the ring)."""
        if self.transport_name == "dev":
            return None
        a = init.arg
        offered = a.flags | (
            a.flags2 << 32 if a.flags & FuseInitFlags.FUSE_INIT_EXT else 0
        )
        why = None
        if not offered & FuseInitFlags.FUSE_OVER_IO_URING:
            why = uring_unavailable() or "INIT does not offer FUSE_OVER_IO_URING"
        else:
            try:
                return UringTransport(self.fd, self.dev)
            except OSError as e:
                why = str(e)
        if self.transport_name == "uring":
            raise OSError(errno.EOPNOTSUPP, f"io_uring transport: {why}")
        log.info("io_uring transport not used: %s", why)
        return None

    def _max_payload(self) -> int:
        """The ring's max_payload_sz (fs/fuse/dev_uring.c fuse_uring_create)."""
        max_pages = -(-self.conn.max_write // 4096)
        return max(FUSE_MIN_READ_BUFFER, self.conn.max_write, max_pages * 4096)

    async def run(self, nursery: trio.Nursery) -> None:
        """Serve until the filesystem is unmounted (or DESTROY)."""
        self._nursery = nursery
        handle = self._handle_traced if self.trace else self.handle
        try:
            await self.transport.run(handle)
        finally:
            self.transport.close()

    def handle(self, data: memoryview, token: int) -> bool:
        """Serve one request; True when the session is over (DESTROY)."""
        try:
            req = self._receive(data)
        except ProtocolError as e:
            self._protocol_error(data, token, e)
            return False
        cls = type(req)
        if cls is rq.Interrupt:
            self._interrupt(req)
            return False
        try:
            reply = self._dispatch(req)
        except Parked as parked:
            self._park(parked, token)
            return False
        if reply is not None:
            self._reply(token, reply)
        return cls is rq.Destroy

    def _protocol_error(self, data: memoryview, token: int, e: ProtocolError) -> None:
        """A message that does not parse: EIO to its request if the header parsed."""
        if len(data) < FuseInHeader.SIZE:
            log.error("unparseable message from the kernel: %s", e)
            return
        hdr = FuseInHeader.unpack_from(data)
        log.error(
            "unparseable message from the kernel (opcode %d, unique %d): %s; EIO",
            hdr.opcode,
            hdr.unique,
            e,
        )
        bad = rq.BadRequest(hdr, None, str(e).encode(), b"")
        self._reply(token, self.conn.reply_error(bad, errno.EIO))

    def _park(self, parked: Parked, token: int) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._finish, parked, token)

    def _interrupt(self, req: rq.Interrupt) -> None:
        scope = self.inflight.get(req.arg.unique)
        if scope is not None:
            scope.cancel()

    def _handle_traced(self, data: memoryview, token: int) -> bool:
        t0 = time.perf_counter_ns()
        try:
            req = self.conn.receive(data)
        except ProtocolError as e:
            self._protocol_error(data, token, e)
            return False
        if isinstance(req, rq.Interrupt):
            self._interrupt(req)
            return False
        try:
            reply = self.dispatcher.dispatch(req)
        except Parked as parked:
            self._park(parked, token)
            return False
        if reply is not None:
            self._reply(token, reply)
        self._trace(req, reply, t0)
        return isinstance(req, rq.Destroy)

    async def _finish(self, parked: Parked, token: int) -> None:
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
        self._reply(token, reply)
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
    transport: str | None = None,
    task_status: trio.TaskStatus[FuseSession] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Mount ``tree`` at ``mountpoint`` and serve it until unmounted or cancelled.

    ``transport`` is ``"dev"``, ``"uring"`` or ``"auto"`` (default: `default_transport`).

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
        session = FuseSession(
            tree,
            mountpoint,
            fd,
            conn,
            procs,
            resolver,
            trace,
            transport or default_transport(),
        )
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
