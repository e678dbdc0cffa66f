"""Seccomp user notification: trap the ioctls that create fds in `vfiofs run`.

A FUSE reply cannot create a file descriptor in the caller, so the launcher installs a
filter that turns those ioctls into notifications (kernel/seccomp.c):
VFIO_GROUP_GET_DEVICE_FD, and iommufd's IOMMU_FAULT_QUEUE_ALLOC, IOMMU_VEVENTQ_ALLOC and
IOMMU_TEST_CMD (CREATE_ACCESS, DMABUF_GET). `SeccompSupervisor` serves the listener in
its own thread until every process using the filter has exited (POLLHUP). A handler
answers each call with `InstallFd` (install that daemon-side fd with
SECCOMP_IOCTL_NOTIF_ADDFD + SECCOMP_ADDFD_FLAG_SEND, which also completes the ioctl with
the new fd number), with a plain return value (after installing fds itself through
`SeccompSupervisor.addfd`), or with CONTINUE for fds that are not ours: the real ioctl
runs.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import select
import struct
import threading
from collections.abc import Callable
from typing import Final

import attrs

from ..abi.iommufd import IOMMU_FAULT_QUEUE_ALLOC, IOMMU_VEVENTQ_ALLOC
from ..abi.iommufd_test import IOMMU_TEST_CMD
from ..abi.vfio import VFIO_GROUP_GET_DEVICE_FD
from ..errors import KernelError

log = logging.getLogger("vfiofs.seccomp")

SECCOMP_SET_MODE_FILTER: Final = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER: Final = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: Final = 1 << 5
SECCOMP_RET_USER_NOTIF: Final = 0x7FC00000
SECCOMP_RET_ALLOW: Final = 0x7FFF0000
SECCOMP_USER_NOTIF_FLAG_CONTINUE: Final = 1
SECCOMP_ADDFD_FLAG_SEND: Final = 1 << 1
SECCOMP_IOCTL_NOTIF_RECV: Final = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND: Final = 0xC0182101
SECCOMP_IOCTL_NOTIF_ID_VALID: Final = 0x40082102
SECCOMP_IOCTL_NOTIF_ADDFD: Final = 0x40182103
AUDIT_ARCH_X86_64: Final = 0xC000003E
NR_IOCTL: Final = 16
NR_SECCOMP: Final = 317
PR_SET_NO_NEW_PRIVS: Final = 38

_NOTIF = struct.Struct("<QIIiIQ6Q")  # seccomp_notif (80 bytes)
_RESP = struct.Struct("<QqiI")  # seccomp_notif_resp
_ADDFD = struct.Struct("<QIIII")  # seccomp_notif_addfd


class _Continue:
    def __repr__(self) -> str:
        return "CONTINUE"


CONTINUE: Final = _Continue()
"""What a handler returns for a call that is not ours: the real ioctl runs."""

TRAPPED: Final = (
    VFIO_GROUP_GET_DEVICE_FD,
    IOMMU_FAULT_QUEUE_ALLOC,
    IOMMU_VEVENTQ_ALLOC,
    IOMMU_TEST_CMD,
)
"""The ioctl commands the filter turns into notifications."""


@attrs.frozen
class Notif:
    """One trapped call: notification id, thread, and the ioctl's fd, cmd and arg."""

    id: int
    tid: int
    fd: int
    cmd: int
    arg: int


@attrs.frozen
class InstallFd:
    """Install this daemon-side fd in the caller as the ioctl's result (then closed)."""

    fd: int


Handler = Callable[[Notif], "InstallFd | int | _Continue"]


def bpf_program() -> bytes:
    """The filter: notify on ioctl(*, cmd) for the `TRAPPED` commands on x86-64, allow
    everything else."""
    n = len(TRAPPED)
    insns = [
        (0x20, 0, 0, 4),  # A = seccomp_data.arch
        (0x15, 0, n + 3, AUDIT_ARCH_X86_64),  # arch != x86-64 -> allow
        (0x20, 0, 0, 0),  # A = seccomp_data.nr
        (0x15, 0, n + 1, NR_IOCTL),  # nr != ioctl -> allow
        # A = low 32 bits of args[1] (the kernel's cmd is unsigned int)
        (0x20, 0, 0, 24),
    ]
    for i, cmd in enumerate(TRAPPED):
        insns.append((0x15, n - i, 0, cmd))  # cmd == TRAPPED[i] -> notify
    insns += [
        (0x06, 0, 0, SECCOMP_RET_ALLOW),
        (0x06, 0, 0, SECCOMP_RET_USER_NOTIF),
    ]
    return b"".join(struct.pack("<HBBI", *i) for i in insns)


def install_filter() -> int:
    """Install the filter on the calling (single-threaded) process; the listener fd.

    Sets PR_SET_NO_NEW_PRIVS first: it is inherited, cannot be undone, and blocks setuid
    escalation from inside.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    prog = bpf_program()
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = struct.pack("<H6xQ", len(prog) // 8, ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog, len(fprog))
    libc.syscall.restype = ctypes.c_long
    flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
    fd = libc.syscall(NR_SECCOMP, SECCOMP_SET_MODE_FILTER, flags, fbuf)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER)")
    return int(fd)


class SeccompSupervisor:
    """Serves one listener in a thread of its own until POLLHUP or `stop`."""

    def __init__(self, listener: int, handler: Handler) -> None:
        self.listener = listener
        self.handler = handler
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(
            target=self._run, name="vfiofs-seccomp", daemon=True
        )
        self.served = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (the daemon is shutting down) and close the listener."""
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=10)
        for fd in (self.listener, self._wake_r, self._wake_w):
            os.close(fd)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.listener, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            events = dict(poller.poll())
            if self._wake_r in events:
                return
            ev = events.get(self.listener, 0)
            if ev & select.POLLIN:
                self._one()
            elif ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                log.debug("seccomp listener: every process using the filter has exited")
                return

    def _one(self) -> None:
        buf = bytearray(_NOTIF.size)  # RECV needs a zeroed buffer
        try:
            fcntl.ioctl(self.listener, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.EINTR):  # the caller died meanwhile
                log.warning("seccomp RECV: %s", e)
            return
        nid, tid, _flags, _nr, _arch, _ip, a0, a1, a2, *_ = _NOTIF.unpack(buf)
        fd = struct.unpack("<i", struct.pack("<I", a0 & 0xFFFFFFFF))[0]
        notif = Notif(nid, tid, fd, a1 & 0xFFFFFFFF, a2)
        self.served += 1
        try:
            result = self.handler(notif)
        except KernelError as e:
            log.info("trapped ioctl %#x from %d: %s", notif.cmd, tid, e)
            self._send(nid, -e.errno, 0)
            return
        except Exception:
            log.exception("bug in the handler of trapped ioctl %#x", notif.cmd)
            self._send(nid, -errno.EIO, 0)
            return
        if result is CONTINUE:
            self._send(nid, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
            return
        if isinstance(result, int):
            self._send(nid, 0, 0, val=result)
            return
        assert isinstance(result, InstallFd)
        try:
            self.addfd(nid, result.fd, send=True)
        except OSError as e:
            log.debug("ioctl %#x from %d: the caller went away (%s)", notif.cmd, tid, e)
        finally:
            os.close(
                result.fd
            )  # the caller holds its own reference now (or nobody does)

    def addfd(self, nid: int, fd: int, *, send: bool = False) -> int:
        """Install daemon-side ``fd`` in the caller of notification ``nid`` (O_CLOEXEC);
        its number there. With ``send`` this also completes the call with that number.
        Raises OSError when the caller is gone."""
        fcntl.ioctl(self.listener, SECCOMP_IOCTL_NOTIF_ID_VALID, struct.pack("<Q", nid))
        flags = SECCOMP_ADDFD_FLAG_SEND if send else 0
        buf = bytearray(_ADDFD.pack(nid, flags, fd, 0, os.O_CLOEXEC))
        # a mutable buffer makes fcntl.ioctl return the ioctl's value: the new fd
        return int(fcntl.ioctl(self.listener, SECCOMP_IOCTL_NOTIF_ADDFD, buf, True))

    def _send(self, nid: int, error: int, flags: int, *, val: int = 0) -> None:
        try:
            fcntl.ioctl(
                self.listener,
                SECCOMP_IOCTL_NOTIF_SEND,
                _RESP.pack(nid, val, error, flags),
            )
        except OSError as e:
            log.debug("seccomp SEND: %s", e.strerror)
