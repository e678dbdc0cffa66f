"""FUSE requests -> the tree -> reply bytes. The only place errnos become replies.

Each entry of the opcode table (`vfiofs.fuse._opcodes.OPCODES`, go-fuse's
``operationHandlers``) is served by the method ``op_<name>``. A method returns the reply
bytes, or None for requests that get no reply. `KernelError` becomes an error reply; any
other exception is a bug: it is logged with its traceback and the caller gets EIO. Opcodes
the kernel expects no answer to (FORGET) get none, not even for an error: it is logged. A
handler that must wait (`WouldBlock`) or needs fds resolved (`NeedFds`) raises `Parked`;
the serve loop then finishes the request in a task of its own.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from typing import Any, Final

import attrs

from ..abi import fuse_kernel as k
from ..abi.fuse_kernel import FuseOpcode
from ..errors import KernelError
from ..fs.node import (
    DEFAULT_POLLMASK,
    Attribute,
    DeviceNode,
    Directory,
    Symlink,
)
from ..fs.tree import Handle, Tree
from ..fuse import replies, requests as rq
from ..fuse._opcodes import OPCODES, opname
from ..fuse.connection import FuseConnection
from ..uaccess import NeedFds
from ..waitqueue import WaitQueue, WouldBlock
from .peer import VFIOFS_IOCTL_WHOAMI, ProcessTable, RequestCaller

log = logging.getLogger("vfiofs.dispatch")

ENTRY_TIMEOUT: Final = 1  # seconds the kernel may cache names and attributes
# every read and write reaches us; close(2) sends no FLUSH
OPEN_FLAGS: Final = int(k.FopenFlags.FOPEN_DIRECT_IO | k.FopenFlags.FOPEN_NOFLUSH)
STREAM_FLAGS: Final = int(k.FopenFlags.FOPEN_STREAM | k.FopenFlags.FOPEN_NONSEEKABLE)
# opcodes the serve loop answers itself: INTERRUPT cancels a parked request
SERVE_LOOP_OPCODES: Final = frozenset({FuseOpcode.FUSE_INTERRUPT})


class Parked(Exception):
    """The request goes on in a task: retry ``attempt`` after waiting for ``reason``."""

    def __init__(
        self,
        req: rq.Request[Any],
        attempt: Callable[[], bytes],
        caller: RequestCaller,
        reason: WouldBlock | NeedFds,
    ) -> None:
        super().__init__()
        self.req, self.attempt, self.caller, self.reason = req, attempt, caller, reason


@attrs.define(eq=False)
class Dispatcher:
    """Serves one mount's requests from a `Tree`."""

    tree: Tree
    conn: FuseConnection
    procs: ProcessTable
    send: Callable[[bytes], None]  # writes one message to /dev/fuse (poll wake-ups)
    _poll_waits: dict[int, tuple[WaitQueue, int]] = attrs.Factory(dict)
    _ops: dict[type, Callable[[Any], bytes | None]] = attrs.field(init=False)
    _no_reply: frozenset[int] = attrs.field(init=False)  # opcodes
    # what the last request did, for --trace
    note: str = ""
    tracing: bool = False

    def __attrs_post_init__(self) -> None:
        # one method per entry of the opcode table, found by name; INTERRUPT is the serve
        # loop's (it cancels a parked request)
        self._ops = {
            spec.cls: getattr(self, "op_" + spec.name.lower())
            for op, spec in OPCODES.items()
            if op not in SERVE_LOOP_OPCODES
        }
        self._no_reply = frozenset(op for op, s in OPCODES.items() if not s.reply)

    # --- entry point --------------------------------------------------------------------

    def dispatch(self, req: rq.Request[Any]) -> bytes | None:
        """The reply to ``req`` (None: no reply). Raises `Parked`. With tracing on,
        ``note`` says what happened."""
        if self.tracing:
            self.note = ""
        op = self._ops.get(type(req))
        if op is None:
            if isinstance(req, rq.BadRequest):
                log.warning("malformed %s: %s", opname(req.opcode), req.reason)
                if req.opcode in self._no_reply:
                    return None
                return self.conn.reply_error(req, errno.EIO)
            log.debug("unsupported opcode %s", opname(req.opcode))
            return self.conn.reply_error(req, errno.ENOSYS)
        try:
            return op(req)
        except KernelError as e:
            self.note = f"{self.note} {e}".strip()
            if req.opcode in self._no_reply:
                # the kernel waits for no answer, so the error can only be logged
                log.warning("%s: %s", type(req).__name__, e)
                return None
            if e.msg:
                log.debug("%s: %s", type(req).__name__, e)
            return self.conn.reply_error(req, e.errno)
        except Parked:
            raise
        except Exception:
            log.exception("bug while serving %r", req)
            self.note = "internal error"
            if req.opcode in self._no_reply:
                return None
            return self.conn.reply_error(req, errno.EIO)

    def finish(self, parked: Parked) -> bytes:
        """Run a parked request's attempt again, turning errors into replies."""
        try:
            return parked.attempt()
        except KernelError as e:
            self.note = str(e)
            return self.conn.reply_error(parked.req, e.errno)
        except (WouldBlock, NeedFds) as e:
            raise Parked(parked.req, parked.attempt, parked.caller, e) from None
        except Exception:
            log.exception("bug while serving %r", parked.req)
            return self.conn.reply_error(parked.req, errno.EIO)

    def _caller(self, req: rq.Request[Any]) -> RequestCaller:
        h = req.header
        return RequestCaller(h.pid, h.uid, h.gid, self.procs)

    def _core(
        self, req: rq.Request[Any], caller: RequestCaller, attempt: Callable[[], bytes]
    ) -> bytes:
        """Run a call into the core; park it if it must wait or needs fds."""
        try:
            return attempt()
        except (WouldBlock, NeedFds) as e:
            raise Parked(req, attempt, caller, e) from None

    # --- session -----------------------------------------------------------------------

    def op_init(self, req: rq.Init) -> bytes:
        return self.conn.init_reply(req)

    def op_destroy(self, req: rq.Destroy) -> bytes:
        return self.conn.reply(req)

    # --- names and attributes ----------------------------------------------------------

    def _attr(self, nodeid: int) -> replies.Attr:
        node = self.tree.node(nodeid)
        a = self.tree.attr(nodeid, node)
        t = int(self.tree.mount_time)
        return replies.Attr(
            ino=a["ino"],
            size=a["size"],
            blocks=0,
            atime=t,
            mtime=t,
            ctime=t,
            mode=a["mode"],
            nlink=a["nlink"],
            uid=a["uid"],
            gid=a["gid"],
            blksize=4096,
        )

    def op_lookup(self, req: rq.Lookup) -> bytes:
        nodeid, _ = self.tree.lookup(
            req.nodeid, req.name.decode(errors="surrogateescape")
        )
        return self.conn.reply(
            req,
            replies.entry_out(nodeid, self._attr(nodeid), ENTRY_TIMEOUT, ENTRY_TIMEOUT),
        )

    def op_forget(self, req: rq.Forget) -> None:
        self.tree.forget(req.nodeid, req.arg.nlookup)

    def op_batch_forget(self, req: rq.BatchForget) -> None:
        for one in req.forgets:
            self.tree.forget(one.nodeid, one.nlookup)

    def op_getattr(self, req: rq.Getattr | rq.Setattr) -> bytes:
        return self.conn.reply(
            req, replies.attr_out(self._attr(req.nodeid), ENTRY_TIMEOUT)
        )

    def op_setattr(self, req: rq.Setattr) -> bytes:
        node = self.tree.node(req.nodeid)
        valid = req.arg.valid
        if valid & (k.FATTR_MODE | k.FATTR_UID | k.FATTR_GID):
            raise KernelError(
                errno.EPERM, "device and sysfs nodes keep their mode and owner"
            )
        if valid & k.FATTR_SIZE:
            if isinstance(node, Directory):
                raise KernelError(errno.EISDIR)
            writable = isinstance(node, DeviceNode) or (
                isinstance(node, Attribute) and (node.store or node.write_at)
            )
            if not writable:
                raise KernelError(errno.EACCES, "read-only file")
            # truncation (O_TRUNC) of an attribute or device file is ignored, as in sysfs
        return self.op_getattr(req)

    def op_readlink(self, req: rq.Readlink) -> bytes:
        node = self.tree.node(req.nodeid)
        if not isinstance(node, Symlink):
            raise KernelError(errno.EINVAL)
        return self.conn.reply(req, node.target.encode())

    def op_statfs(self, req: rq.Statfs) -> bytes:
        return self.conn.reply(
            req, replies.statfs_out(bsize=4096, namelen=255, frsize=4096)
        )

    def op_access(self, req: rq.Access) -> bytes:
        self.tree.node(req.nodeid)
        return self.conn.reply(req)

    def op_getxattr(self, req: rq.Getxattr) -> bytes:
        raise KernelError(errno.ENODATA)

    def op_listxattr(self, req: rq.Listxattr) -> bytes:
        if req.arg.size == 0:
            return self.conn.reply(req, replies.getxattr_size(0))
        return self.conn.reply(req)

    # --- directories -------------------------------------------------------------------

    def op_opendir(self, req: rq.Opendir) -> bytes:
        h = self.tree.opendir(req.nodeid, req.arg.flags)
        return self.conn.reply(req, replies.open_out(h.fh, 0))

    def _dir_entries(self, h: Handle) -> list[tuple[int, str, int]]:
        parent_path = self.tree.path(h.nodeid)
        out = [(h.nodeid, ".", stat.S_IFDIR), (h.nodeid, "..", stat.S_IFDIR)]
        for name, node in h.entries or ():
            out.append(
                (self.tree.remember(node, f"{parent_path}/{name}"), name, node.mode)
            )
        return out

    def op_readdir(self, req: rq.Readdir) -> bytes:
        h = self.tree.handle(req.arg.fh)
        return self.conn.reply(
            req, replies.dirents(self._dir_entries(h), req.arg.offset, req.arg.size)
        )

    def op_releasedir(self, req: rq.Releasedir) -> bytes:
        self.tree.release(req.arg.fh)
        return self.conn.reply(req)

    def op_fsync(self, req: rq.Fsync | rq.Fsyncdir) -> bytes:
        return self.conn.reply(req)

    op_fsyncdir = op_fsync

    # --- files -------------------------------------------------------------------------

    def op_open(self, req: rq.Open) -> bytes:
        caller = self._caller(req)
        flags = req.arg.flags

        def attempt() -> bytes:
            h = self.tree.open(caller, req.nodeid, flags)
            self.note = f"fh={h.fh}"
            fopen = OPEN_FLAGS
            if getattr(h.file, "nonseekable", False):  # nonseekable_open(): a stream
                fopen |= STREAM_FLAGS
            return self.conn.reply(req, replies.open_out(h.fh, fopen))

        return self._core(req, caller, attempt)

    # Capabilities are looked up with getattr, not isinstance(Protocol): a
    # runtime_checkable isinstance costs microseconds, and this is every request.

    def op_read(self, req: rq.Read) -> bytes:
        a = req.arg
        read = getattr(self.tree.handle(a.fh).file, "read", None)
        if read is None:
            raise KernelError(errno.EINVAL)
        caller = self._caller(req)
        return self._core(
            req, caller, lambda: self.conn.reply(req, read(caller, a.offset, a.size))
        )

    def op_write(self, req: rq.Write) -> bytes:
        a = req.arg
        write = getattr(self.tree.handle(a.fh).file, "write", None)
        if write is None:
            raise KernelError(errno.EINVAL)
        caller = self._caller(req)
        data = req.data
        return self._core(
            req,
            caller,
            lambda: self.conn.reply(
                req, replies.write_out(write(caller, a.offset, data))
            ),
        )

    def op_flush(self, req: rq.Flush) -> bytes:
        # Nothing happens at close(2) of one fd; RELEASE (the last close) does the work.
        # ENOSYS makes the kernel stop sending FLUSH at all, which keeps close() cheap
        # for our own pidfd_getfd duplicates too.
        raise KernelError(errno.ENOSYS)

    def op_release(self, req: rq.Release) -> bytes:
        h = self.tree.release(req.arg.fh)
        if h is not None and h.file is not None:
            try:
                h.file.release()
            except Exception:
                log.exception("bug while releasing %s", self.tree.path(h.nodeid))
        return self.conn.reply(req)

    def op_ioctl(self, req: rq.Ioctl) -> bytes:
        a = req.arg
        h = self.tree.handles.get(a.fh) or self.tree.handle(a.fh)
        cmd = a.cmd
        if cmd == VFIOFS_IOCTL_WHOAMI:
            # our own pidfd_getfd duplicate asks which handle it is (peer.FdResolver)
            if self.procs.tgid(req.header.pid) != os.getpid():
                raise KernelError(errno.ENOTTY)
            if self.tracing:
                self.note = "vfiofs fd lookup"
            return self.conn.reply_ioctl(req, h.fh)
        ioctl = getattr(h.file, "ioctl", None)
        if ioctl is None:
            raise KernelError(errno.ENOTTY)
        hdr = req.header
        caller = RequestCaller(hdr.pid, hdr.uid, hdr.gid, self.procs)
        arg = a.arg
        if self.tracing:
            namer = getattr(h.file, "ioctl_name", None)
            self.note = (namer(cmd) if namer else None) or f"cmd={cmd:#x}"
            caller.trace = []
        try:
            return self.conn.reply_ioctl(req, ioctl(caller, cmd, arg))
        except (WouldBlock, NeedFds) as e:
            attempt = lambda: self.conn.reply_ioctl(req, ioctl(caller, cmd, arg))  # noqa: E731
            raise Parked(req, attempt, caller, e) from None
        finally:
            if caller.trace:
                self.note += "(" + ", ".join(caller.trace) + ")"

    def op_poll(self, req: rq.Poll) -> bytes:
        a = req.arg
        poll = getattr(self.tree.handle(a.fh).file, "poll", None)
        if poll is None:
            return self.conn.reply(req, replies.poll_out(DEFAULT_POLLMASK))
        mask, queue = poll(self._caller(req))
        if a.flags & k.FUSE_POLL_SCHEDULE_NOTIFY and queue is not None:
            self._schedule_poll_notify(a.kh, queue)
        return self.conn.reply(req, replies.poll_out(mask))

    def _schedule_poll_notify(self, kh: int, queue: WaitQueue) -> None:
        old = self._poll_waits.get(kh)
        if old is not None:
            if old[0] is queue:
                return
            old[0].remove(old[1])

        def wake() -> None:
            self._poll_waits.pop(kh, None)
            self.send(self.conn.notify_poll(kh))

        self._poll_waits[kh] = (queue, queue.add(wake))

    def release_all(self) -> None:
        """Release every open handle (the filesystem is going away)."""
        for h in self.tree.release_all():
            if h.file is not None:
                try:
                    h.file.release()
                except Exception:
                    log.exception("bug while releasing %s", self.tree.path(h.nodeid))
