"""The processes behind requests: their memory, credentials and file descriptors.

Memory: reads go through a cached ``/proc/PID/mem`` fd (one pread per copy, bound to the
process's mm, so a recycled pid can never be read by mistake). Writes use
``process_vm_writev``, which honours page protections as ``copy_to_user`` does; writes
through /proc/PID/mem would not (they are FOLL_FORCE), and a cached protection check
cannot see an mprotect() or munmap() made since (docs/performance.md has the figures of
both ways). The header pid is a thread id; it is mapped to its process (Tgid) only when a
handler needs the memory or the fds. Per-process state is cached across requests; a
process that exited is noticed when its memory no longer reads, and by the reaper.

Fds: a caller's fd number is duplicated with ``pidfd_getfd``; a duplicate on our own mount
is asked, with a private ioctl, which handle (fh) it is. That ioctl is served by the FUSE
reader, so `FdResolver.resolve` must run in a worker thread (docs/internals.md).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import mmap
import os
import resource
import select
import stat
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ..abi.ioctl import _IO
from ..errors import KernelError
from ..uaccess import AddressSpace, FileRef, ForeignFile, NeedFds, OurFile

log = logging.getLogger("vfiofs.peer")

# A private ioctl on one of our own files answers its fh, for the daemon itself only.
# (type ';' like VFIO, nr 0xff: unused by vfio.h and iommufd.h)
VFIOFS_IOCTL_WHOAMI = _IO(0x3B, 0xFF)

_SYS_pidfd_getfd = 438
_PIDFD_THREAD = os.O_EXCL

_libc = ctypes.CDLL(None, use_errno=True)


# no argtypes: the call gets pre-built ctypes values (argument conversion costs ~0.5 us)
_libc.process_vm_writev.restype = ctypes.c_ssize_t
_writev = _libc.process_vm_writev
_BOUNCE = 4096  # writes up to this size go through a per-process preallocated buffer
_ONE, _ZERO = ctypes.c_ulong(1), ctypes.c_ulong(0)
_libc.syscall.restype = ctypes.c_long


def _tgid_of(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except OSError as e:
        raise KernelError(errno.ESRCH, f"task {tid}: {e.strerror}") from None
    raise KernelError(errno.ESRCH, f"task {tid}: no Tgid in its status")


def _memlock_from_limits(tgid: int) -> int:
    """RLIMIT_MEMLOCK (soft) from /proc/PID/limits, readable where prlimit is not."""
    with open(f"/proc/{tgid}/limits", "rb") as f:
        for line in f:
            if line.startswith(b"Max locked memory"):
                soft = line[26:].split()[0]
                return -1 if soft == b"unlimited" else int(soft)
    raise OSError(errno.EINVAL, "no 'Max locked memory' line")


@attrs.define(eq=False)
class ProcessMemory:
    """One process's memory (`vfiofs.uaccess.AddressSpace`), kept while it lives."""

    tgid: int
    locked_vm: int = 0
    _memfd: int = -1
    _pidfd: int = -1
    _poller: Any = None
    _buf: Any = None
    _bounce: Any = None  # _buf as a writable memoryview
    _iov: Any = None  # local and remote iovec, as u64s: base, len, base, len
    _args: Any = None

    def __attrs_post_init__(self) -> None:
        try:
            self._pidfd = os.pidfd_open(self.tgid)
            self._memfd = os.open(f"/proc/{self.tgid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            self.close()
            raise KernelError(errno.ESRCH, f"process {self.tgid}: {e}") from None
        self._poller = select.poll()
        self._poller.register(self._pidfd, select.POLLIN)
        self._buf = ctypes.create_string_buffer(_BOUNCE)
        self._bounce = memoryview(self._buf).cast("B")
        iovs = (ctypes.c_uint64 * 4)(ctypes.addressof(self._buf), 0, 0, 0)
        self._iov = memoryview(iovs).cast("B").cast("Q")
        self._args = (
            ctypes.c_int(self.tgid),
            ctypes.c_void_p(ctypes.addressof(iovs)),
            ctypes.c_void_p(ctypes.addressof(iovs) + 16),
            iovs,
        )

    def alive(self) -> bool:
        """False once the process has exited (its pidfd turns readable)."""
        return self._pidfd >= 0 and not self._poller.poll(0)

    def read(self, addr: int, size: int) -> bytes:
        if size == 0:
            return b""
        try:
            data = os.pread(self._memfd, size, addr)
        except (OSError, OverflowError, ValueError):
            raise KernelError(errno.EFAULT, f"read {addr:#x}+{size:#x}") from None
        if len(data) != size:
            raise KernelError(errno.EFAULT, f"short read at {addr:#x}")
        return data

    def write(self, addr: int, data: bytes) -> None:
        """A write at any time (device DMA): refused once the process is gone, so a
        recycled pid never receives it."""
        if not self.alive():
            raise KernelError(errno.EFAULT, f"process {self.tgid} is gone")
        self.write_live(addr, data)

    def write_live(self, addr: int, data: bytes) -> None:
        """A write while the process is known to be alive (it waits for our reply).
        process_vm_writev honours page protections, as copy_to_user does.

        The hot path is one memcpy into the bounce buffer, three stores into the
        iovecs and the call (no ctypes attribute setters: they cost more than the copy).
        """
        n = len(data)
        if not n:
            return
        if addr < 0 or addr + n > 1 << 64:
            raise KernelError(errno.EFAULT, f"write {addr:#x}")
        iov = self._iov
        big = None
        if n <= _BOUNCE:
            self._bounce[:n] = data
        else:
            big = ctypes.create_string_buffer(bytes(data), n)
            iov[0] = ctypes.addressof(big)
        iov[1] = iov[3] = n
        iov[2] = addr
        pid, local, remote, _ = self._args
        done = _writev(pid, local, _ONE, remote, _ONE, _ZERO)
        if big is not None:
            iov[0] = ctypes.addressof(self._buf)
        if done != n:
            raise KernelError(errno.EFAULT, f"write {addr:#x}+{n:#x}")

    def check_range(self, addr: int, size: int, *, write: bool) -> None:
        end = addr + size
        try:
            with open(f"/proc/{self.tgid}/maps", "rb") as f:
                maps = f.read()
        except OSError:
            raise KernelError(errno.EFAULT, "process gone") from None
        cur = addr
        for line in maps.splitlines():
            span, perms = line.split(b" ", 2)[:2]
            lo_s, hi_s = span.split(b"-")
            lo, hi = int(lo_s, 16), int(hi_s, 16)
            if hi <= cur:
                continue
            if lo > cur:
                break
            if perms[0:1] != b"r" or (write and perms[1:2] != b"w"):
                raise KernelError(
                    errno.EFAULT, f"{cur:#x}: mapping is {perms.decode()}"
                )
            cur = hi
            if cur >= end:
                return
        raise KernelError(errno.EFAULT, f"{cur:#x} not mapped")

    def memlock_limit(self) -> int:
        """RLIMIT_MEMLOCK of the process (prlimit; /proc/PID/limits where prlimit is
        refused, e.g. to a daemon without CAP_SYS_RESOURCE over another user).

        Raises:
            KernelError(ESRCH): neither can be read (the process is gone).
        """
        try:
            soft, _ = resource.prlimit(self.tgid, resource.RLIMIT_MEMLOCK)
        except OSError as e:
            try:
                return _memlock_from_limits(self.tgid)
            except (OSError, ValueError) as e2:
                log.warning(
                    "RLIMIT_MEMLOCK of process %d: prlimit: %s; /proc limits: %s",
                    self.tgid,
                    e.strerror,
                    e2,
                )
                raise KernelError(errno.ESRCH, f"process {self.tgid}") from None
        return -1 if soft == resource.RLIM_INFINITY else soft

    def close(self) -> None:
        for name in ("_memfd", "_pidfd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)


def _is_address_space(mm: ProcessMemory) -> AddressSpace:
    return mm  # mypy checks that ProcessMemory satisfies the protocol


@attrs.define(eq=False)
class ProcessTable:
    """Thread id -> the process's `ProcessMemory`, one object per live process (type1
    charges ``locked_vm`` on it)."""

    _by_tgid: dict[int, ProcessMemory] = attrs.Factory(dict)
    _tgid_of_tid: dict[int, int] = attrs.Factory(dict)

    def tgid(self, tid: int) -> int:
        tgid = self._tgid_of_tid.get(tid)
        if tgid is not None and (
            tgid == tid or os.path.exists(f"/proc/{tgid}/task/{tid}")
        ):
            return tgid
        tgid = _tgid_of(tid)
        if len(self._tgid_of_tid) > 4096:
            self._tgid_of_tid.clear()
        self._tgid_of_tid[tid] = tgid
        return tgid

    def memory(self, tid: int) -> ProcessMemory:
        """The memory of the process behind ``tid``, cached across requests.

        No liveness check here (it costs a system call per request): the caller is
        waiting for our reply, so its pid names a live process. If that pid was
        recycled since the cached object was made, the cached /proc/PID/mem no longer
        reads; `RequestCaller.copy_from_user` then calls `renew`.
        """
        tgid = self.tgid(tid)
        mm = self._by_tgid.get(tgid)
        if mm is not None:
            return mm
        self.reap()  # a new process: a good moment to forget the ones that exited
        mm = ProcessMemory(tgid)
        self._by_tgid[tgid] = mm
        return mm

    def renew(self, mm: ProcessMemory) -> ProcessMemory | None:
        """A fresh object for ``mm``'s pid if ``mm``'s process has exited, else None."""
        if mm.alive():
            return None
        mm.close()
        if self._by_tgid.get(mm.tgid) is mm:
            del self._by_tgid[mm.tgid]
        fresh = ProcessMemory(mm.tgid)
        self._by_tgid[mm.tgid] = fresh
        return fresh

    def reap(self) -> None:
        """Close the memory fds of processes that have exited."""
        for tgid, mm in list(self._by_tgid.items()):
            if not mm.alive():
                mm.close()
                del self._by_tgid[tgid]

    def close(self) -> None:
        for mm in self._by_tgid.values():
            mm.close()
        self._by_tgid.clear()


def capable(tid: int, cap: int) -> bool:
    """Whether thread ``tid`` has capability ``cap``, as the kernel's ``capable()``
    decides: in its effective set *and* in the initial user namespace, which the
    daemon's own stands for. A task in a user namespace of its own (`vfiofs run`
    without root) holds its capabilities only there, so here it has none. False, with a
    warning, when its status cannot be read (the task is gone)."""
    try:
        theirs, ours = os.stat(f"/proc/{tid}/ns/user"), os.stat("/proc/self/ns/user")
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
            return False
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except OSError as e:
        log.warning("capabilities of task %d: %s; taken as none", tid, e.strerror)
        return False
    log.warning("capabilities of task %d: no CapEff line; taken as none", tid)
    return False


@attrs.define(eq=False)
class OsEventFd:
    """A caller's eventfd, duplicated into the daemon."""

    fd: int

    def signal(self) -> None:
        if self.fd >= 0:
            try:
                os.eventfd_write(self.fd, 1)
            except BlockingIOError:  # counter at its maximum: eventfd_signal saturates
                log.debug("eventfd %d: counter full", self.fd)
            except OSError as e:
                log.warning("eventfd %d: %s; interrupt not delivered", self.fd, e)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


TMPFS_MAGIC = 0x01021994
HUGETLBFS_MAGIC = 0x958458F6


def _fs_type(fd: int) -> int:
    """statfs(2)'s f_type of the file behind ``fd``."""
    buf = ctypes.create_string_buffer(120)  # struct statfs; f_type comes first
    if _libc.fstatfs(fd, buf) != 0:
        return 0
    return int.from_bytes(buf.raw[:8], "little")


@attrs.define(eq=False)
class OsFileMemory:
    """A caller's memfd or regular file (IOAS_MAP_FILE), duplicated into the daemon and
    mapped shared: DMA reads and writes the file's pages (`uaccess.FileMemory`)."""

    fd: int
    tgid: int = 0
    size: int = 0
    shmem: bool = False
    locked_vm: int = 0
    areas: int = 0  # IOAS areas mapping it (io_pagetable closes it with the last)
    _map: Any = None

    def __attrs_post_init__(self) -> None:
        st = os.fstat(self.fd)
        self.size = st.st_size
        self.shmem = _fs_type(self.fd) in (TMPFS_MAGIC, HUGETLBFS_MAGIC)

    def _mapped(self) -> Any:
        """The shared mapping, made on first use (most files resolved are never used
        as memory); None when the file cannot be mapped."""
        if self._map is None and self.size and self.fd >= 0:
            for prot in (mmap.PROT_READ | mmap.PROT_WRITE, mmap.PROT_READ):
                try:  # opened read-only or sealed: map for reading
                    self._map = mmap.mmap(self.fd, self.size, mmap.MAP_SHARED, prot)
                    break
                except (OSError, ValueError):
                    continue
        return self._map

    def read(self, addr: int, size: int) -> bytes:
        if self._mapped() is None or addr < 0 or addr + size > self.size:
            raise KernelError(errno.EFAULT, f"file offset {addr:#x}+{size:#x}")
        return bytes(self._map[addr : addr + size])

    def write(self, addr: int, data: bytes) -> None:
        if self._mapped() is None or addr < 0 or addr + len(data) > self.size:
            raise KernelError(errno.EFAULT, f"file offset {addr:#x}+{len(data):#x}")
        try:
            self._map[addr : addr + len(data)] = data
        except TypeError:  # a read-only mapping
            raise KernelError(errno.EFAULT, "read-only file") from None

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# What a worker found for one fd number: ("ours", fh), ("eventfd", dupfd),
# ("file", dupfd) for a regular file or memfd, ("other", -1) or ("error", errno).
Found = tuple[str, int]


@attrs.define(eq=False)
class FdResolver:
    """Turns a caller's fd numbers into our handles or foreign files (in a worker)."""

    mount_dev: int

    def resolve(self, tgid: int, fds: Iterable[int]) -> dict[int, Found]:
        """Blocking: run in a worker thread, never on the FUSE reader."""
        out: dict[int, Found] = {}
        try:
            pidfd = os.pidfd_open(tgid)
        except OSError as e:
            return dict.fromkeys(fds, ("error", e.errno or errno.ESRCH))
        try:
            for fd in fds:
                out[fd] = self._one(pidfd, fd)
        finally:
            os.close(pidfd)
        return out

    def _one(self, pidfd: int, fd: int) -> Found:
        if fd < 0:
            return ("error", errno.EBADF)
        dup = _libc.syscall(_SYS_pidfd_getfd, pidfd, fd, 0)
        if dup < 0:
            err = ctypes.get_errno()
            return ("error", errno.EBADF if err in (errno.EBADF, errno.ESRCH) else err)
        keep = False
        try:
            st = os.fstat(dup)
            if st.st_dev == self.mount_dev:
                try:
                    return ("ours", fcntl.ioctl(dup, VFIOFS_IOCTL_WHOAMI))
                except OSError as e:  # a node of ours without a handle (a directory)
                    log.debug("fd %d on our mount has no handle: %s", fd, e.strerror)
                    return ("other", -1)
            if os.readlink(f"/proc/self/fd/{dup}") == "anon_inode:[eventfd]":
                keep = True
                return ("eventfd", dup)
            if stat.S_ISREG(st.st_mode):
                keep = True
                return ("file", dup)
            return ("other", -1)
        finally:
            if not keep:
                os.close(dup)


def file_ref(found: Found, handles: dict[int, object]) -> FileRef | KernelError:
    """What `FdResolver` found, as the core sees it (on the core thread)."""
    kind, value = found
    if kind == "error":
        return KernelError(value, "bad fd")
    if kind == "ours":
        h = handles.get(value)
        file = getattr(h, "file", None)
        return OurFile(file) if file is not None else ForeignFile("other")
    if kind == "eventfd":
        return ForeignFile("eventfd", OsEventFd(value))
    if kind == "file":
        try:
            return ForeignFile("file", file=OsFileMemory(value))
        except OSError as e:
            os.close(value)
            return KernelError(e.errno or errno.EINVAL, "mapping the file")
    return ForeignFile("other")


class RequestCaller:
    """The `vfiofs.uaccess.Caller` of one FUSE request (built for every request, so a
    plain slotted class rather than attrs)."""

    __slots__ = ("_mm", "gid", "installer", "procs", "resolved", "tid", "trace", "uid")

    def __init__(self, tid: int, uid: int, gid: int, procs: ProcessTable) -> None:
        self.tid, self.uid, self.gid, self.procs = tid, uid, gid, procs
        self.resolved: dict[int, FileRef | KernelError] | None = None  # by the session
        self.trace: list[str] | None = None  # decoded ioctl arguments, with --trace
        self._mm: ProcessMemory | None = None
        # set under `vfiofs run` for calls the seccomp supervisor serves
        self.installer: Callable[[object, int | None], int] | None = None

    @property
    def tgid(self) -> int:
        return self.procs.tgid(self.tid)

    @property
    def mm(self) -> ProcessMemory:
        if self._mm is None:
            self._mm = self.procs.memory(self.tid)
        return self._mm

    def copy_from_user(self, addr: int, size: int) -> bytes:
        mm = self.mm
        try:
            return mm.read(addr, size)
        except KernelError:
            fresh = self.procs.renew(mm)  # a cached process that exited, pid reused?
            if fresh is None:
                raise
            self._mm = fresh
            return fresh.read(addr, size)

    def copy_to_user(self, addr: int, data: bytes) -> None:
        # the caller is blocked in this very syscall, so its pid cannot have been reused
        self.mm.write_live(addr, data)

    def fget(self, fd: int) -> FileRef:
        return self.fget_many([fd])[0]

    def fget_many(self, fds: Iterable[int]) -> list[FileRef]:
        fds = list(fds)
        resolved = self.resolved or {}
        missing = [fd for fd in fds if fd >= 0 and fd not in resolved]
        if missing:
            raise NeedFds(dict.fromkeys(missing))
        out: list[FileRef] = []
        for fd in fds:
            r = resolved.get(fd) if fd >= 0 else KernelError(errno.EBADF, "fd < 0")
            if isinstance(r, KernelError):
                raise KernelError(r.errno, f"fd {fd}: {r.msg}")
            assert r is not None
            out.append(r)
        return out

    def capable(self, cap: int) -> bool:
        return capable(self.tid, cap)

    def install_fd(self, file: object, addr: int | None) -> int:
        if self.installer is None:
            # A FUSE reply cannot create an fd in the caller (docs/internals.md)
            log.warning(
                "an ioctl that returns a new fd needs `vfiofs run` (it installs the fd "
                "with seccomp); on a plain mount it fails with EOPNOTSUPP"
            )
            raise KernelError(errno.EOPNOTSUPP, "a new fd outside vfiofs run")
        return self.installer(file, addr)

    def discard_unused(self) -> None:
        """Close foreign fds the handler did not take."""
        for r in (self.resolved or {}).values():
            if isinstance(r, ForeignFile):
                r.discard()
