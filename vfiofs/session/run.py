"""``vfiofs run -- CMD``: serve the tree and run CMD where tools look for VFIO.

The daemon mounts the tree at a private staging directory, then starts CMD through the
single-threaded launcher (`vfiofs.launch`): a private mount namespace with the tree bound
over /dev/vfio, /dev/iommu and the sysfs paths, and a seccomp filter that traps the
ioctls that create fds (``VFIO_GROUP_GET_DEVICE_FD``; on /dev/iommu FAULT_QUEUE_ALLOC,
VEVENTQ_ALLOC and IOMMU_TEST_CMD). The launcher hands the filter's listener back to us;
a `SeccompSupervisor` thread answers each trapped call: it runs the call as the kernel
would (on the core thread), opens each new file through a hidden node of our mount (so
the fd is ours and its calls reach the daemon), and installs that fd in the caller.

CMD's exit status is ours. Ctrl-C reaches CMD (same process group); SIGTERM and SIGHUP are
passed on to it; the daemon waits for CMD to exit, then unmounts.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
from typing import Any, TextIO, cast

import attrs
import trio

from ..abi.vfio import VFIO_GROUP_GET_DEVICE_FD
from ..errors import KernelError
from ..fs.node import DeviceNode, OpenFile
from ..fs.tree import Tree
from ..uaccess import Caller, NeedFds, strndup_user
from .peer import RequestCaller, file_ref
from .seccomp import CONTINUE, InstallFd, Notif, SeccompSupervisor
from .serve import FuseSession, serve, take_signals

log = logging.getLogger("vfiofs.run")

DEVICE_FD_NODE = ".vfiofs/device-fd"


@attrs.define(eq=False)
class DeviceFdBroker:
    """Hands a device file prepared on the core thread to the supervisor thread's open()
    of the hidden node: the open is matched by the opening thread's id."""

    pending: dict[int, OpenFile] = attrs.Factory(dict)

    def install(self, tree: Tree) -> None:
        # the daemon's own user opens it (default_permissions applies to us too)
        uid, gid = os.geteuid(), os.getegid()
        hidden = tree.root.mkdir(".vfiofs", 0o700)
        hidden.uid, hidden.gid = uid, gid
        hidden.add(
            "device-fd",
            DeviceNode(mode=stat.S_IFREG | 0o600, opener=self.open, uid=uid, gid=gid),
        )

    def open(self, caller: Caller, flags: int) -> OpenFile:
        if caller.tgid != os.getpid():
            raise KernelError(errno.EACCES, "internal node")
        file = self.pending.pop(caller.tid, None)
        if file is None:
            raise KernelError(errno.ENODEV, "no device fd pending for this thread")
        return file


@attrs.define(eq=False)
class GetDeviceFd:
    """The supervisor's handler for one trapped VFIO_GROUP_GET_DEVICE_FD."""

    session: FuseSession
    broker: DeviceFdBroker

    def __call__(self, n: Notif) -> Any:
        """Runs in the supervisor thread. Returns the daemon-side fd to install, or
        CONTINUE when the fd is not one of our group files; raises KernelError."""
        tid, fd, name_ptr = n.tid, n.fd, n.arg
        session = self.session
        tgid = session.call_in_core(lambda: session.procs.tgid(tid))
        kind, fh = session.resolver.resolve(tgid, [fd])[fd]
        if kind != "ours":
            return CONTINUE  # not our file: the real ioctl runs (and fails as it would)
        me = threading.get_native_id()  # the open() below comes from this thread

        def prepare() -> bool:
            handle = session.tree.handles.get(fh)
            # only a group fd opens devices (the vfio core's VfioGroupFile.get_device_fd)
            open_device = (
                getattr(handle.file, "get_device_fd", None) if handle else None
            )
            if open_device is None:
                return False  # ours but not a group: our own FUSE ioctl answers it
            caller = RequestCaller(tid, 0, 0, session.procs)
            name = strndup_user(caller, name_ptr).decode(errors="replace")
            self.broker.pending[me] = open_device(caller, name)
            return True

        if not session.call_in_core(prepare):
            return CONTINUE
        try:
            path = os.path.join(session.mountpoint, DEVICE_FD_NODE)
            return InstallFd(os.open(path, os.O_RDWR | os.O_CLOEXEC))
        except OSError as e:

            def drop() -> None:
                df = self.broker.pending.pop(me, None)
                if df is not None:
                    df.release()

            session.call_in_core(drop)
            raise KernelError(e.errno or errno.EIO, "opening the device node") from None


@attrs.define(eq=False)
class IommufdFdIoctl:
    """The supervisor's handler for a trapped iommufd ioctl that may create fds: it
    runs the ioctl on the core thread with a caller whose ``install_fd`` records the new
    files; then each file is opened through the hidden node, added to the caller with
    ADDFD, and its number written where the ioctl said (or returned)."""

    session: FuseSession
    broker: DeviceFdBroker
    supervisor: Any = None  # the SeccompSupervisor (for addfd), set once it exists

    def __call__(self, n: Notif) -> Any:
        session = self.session
        tgid = session.call_in_core(lambda: session.procs.tgid(n.tid))
        kind, fh = session.resolver.resolve(tgid, [n.fd])[n.fd]
        if kind != "ours":
            return CONTINUE
        pending: list[tuple[object, int | None]] = []
        caller = RequestCaller(n.tid, 0, 0, session.procs)

        def record(file: object, addr: int | None) -> int:
            pending.append((file, addr))
            return -1  # the number is known only once the file is added (below)

        caller.installer = record
        caller.resolved = {}

        def attempt() -> Any:
            handle = session.tree.handles.get(fh)
            # an iommufd context says which of its ioctls create fds
            # (IommufdCtx.ioctl_creates_fd); any other file of ours, or another
            # command, goes the FUSE way
            creates_fd = (
                getattr(handle.file, "ioctl_creates_fd", None) if handle else None
            )
            if creates_fd is None or not creates_fd(n.cmd):
                return CONTINUE
            pending.clear()
            return handle.file.ioctl(caller, n.cmd, n.arg)  # type: ignore[union-attr]

        try:
            while True:
                try:
                    rc = session.call_in_core(attempt)
                    break
                except NeedFds as e:
                    found = session.resolver.resolve(tgid, e.fds)

                    def refs(found: dict[int, Any] = found) -> dict[int, Any]:
                        handles: Any = session.tree.handles
                        return {fd: file_ref(f, handles) for fd, f in found.items()}

                    caller.resolved.update(session.call_in_core(refs))
        finally:
            session.call_in_core(caller.discard_unused)
        if rc is CONTINUE:
            return CONTINUE
        for file, addr in pending:
            newfd = self._install(n, file)
            if addr is None:
                rc = newfd
            else:

                def store(a: int = addr, v: int = newfd) -> None:
                    caller.copy_to_user(a, v.to_bytes(4, "little"))

                session.call_in_core(store)
        return rc

    def _install(self, n: Notif, file: object) -> int:
        """Open ``file`` through the hidden node and add it to the caller."""
        session = self.session
        me = threading.get_native_id()
        # the core's open files are OpenFiles (release()), whatever their class
        opened = cast(OpenFile, file)
        session.call_in_core(lambda: self.broker.pending.__setitem__(me, opened))
        try:
            dfd = os.open(
                os.path.join(session.mountpoint, DEVICE_FD_NODE),
                os.O_RDWR | os.O_CLOEXEC,
            )
        except OSError as e:

            def drop() -> None:
                f = self.broker.pending.pop(me, None)
                release = getattr(f, "release", None)
                if release is not None:
                    release()

            session.call_in_core(drop)
            raise KernelError(e.errno or errno.EIO, "opening the new file") from None
        try:
            return int(self.supervisor.addfd(n.id, dfd))
        except OSError as e:
            raise KernelError(
                errno.ESRCH, f"the caller went away ({e.strerror})"
            ) from None
        finally:
            os.close(dfd)  # the caller holds the file (its RELEASE comes at its close)


@attrs.define(eq=False)
class TrappedIoctls:
    """Routes each trapped call to its handler by command."""

    get_device_fd: GetDeviceFd
    iommufd: IommufdFdIoctl

    def __call__(self, n: Notif) -> Any:
        if n.cmd == VFIO_GROUP_GET_DEVICE_FD:
            return self.get_device_fd(n)
        return self.iommufd(n)


def run(
    machine: Any,
    cmd: list[str],
    *,
    trace: TextIO | None = None,
    transport: str | None = None,
) -> int:
    """Serve ``machine`` and run ``cmd`` under it; CMD's exit status."""
    staging = tempfile.mkdtemp(prefix="vfiofs-run-")
    mnt, scratch = os.path.join(staging, "mnt"), os.path.join(staging, "scratch")
    os.mkdir(mnt)
    os.mkdir(scratch)
    broker = DeviceFdBroker()
    broker.install(machine.tree)
    try:
        return trio.run(
            functools.partial(
                _run, machine, cmd, mnt, scratch, broker, trace, transport
            )
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


async def _run(
    machine: Any,
    cmd: list[str],
    mnt: str,
    scratch: str,
    broker: DeviceFdBroker,
    trace: TextIO | None,
    transport: str | None,
) -> int:
    proc: trio.Process | None = None
    early: list[int] = []  # signals that came before CMD existed

    def on_signal(signum: int) -> None:
        # SIGINT from a terminal reaches CMD itself (same process group); a signal that
        # comes before CMD exists is passed on as soon as it does
        if proc is None:
            early.append(signum)
        elif signum != signal.SIGINT and proc.poll() is None:
            proc.send_signal(signum)

    # ours from before the mount exists until it is gone: no default action in between
    with take_signals(on_signal, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        async with trio.open_nursery() as nursery:
            session: FuseSession = await nursery.start(
                functools.partial(
                    serve, machine.tree, mnt, trace=trace, transport=transport
                )
            )
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            with ours:
                with theirs:
                    proc = await trio.lowlevel.open_process(
                        [
                            sys.executable,
                            "-m",
                            "vfiofs.launch",
                            mnt,
                            scratch,
                            str(theirs.fileno()),
                            *cmd,
                        ],
                        pass_fds=[theirs.fileno()],
                    )
                for signum in early:
                    proc.send_signal(signum)
                _, fds, _, _ = await trio.to_thread.run_sync(
                    socket.recv_fds, ours, 1, 1
                )
            supervisor = None
            if fds:
                iommufd = IommufdFdIoctl(session, broker)
                supervisor = SeccompSupervisor(
                    fds[0], TrappedIoctls(GetDeviceFd(session, broker), iommufd)
                )
                iommufd.supervisor = supervisor
                supervisor.start()
            rc = await proc.wait()
            if supervisor is not None:
                supervisor.stop()
            nursery.cancel_scope.cancel()
    return rc if rc >= 0 else 128 - rc
