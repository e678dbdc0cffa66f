"""The caller of a request, as the kernel's ``current``: its memory and its fds.

Handlers below ``session/`` never touch a process directly. They get a `Caller` and use
``copy_from_user`` / ``copy_to_user`` (a bad pointer is ``EFAULT``) and ``fget`` (a caller's
fd number to one of our open handles, or to a foreign file such as an eventfd).

Resolving a fd takes a round trip through our own mount, which the FUSE reader thread must
never make (docs/internals.md, platform facts). So ``fget`` of a fd the session has not resolved yet raises
`NeedFds`; the session resolves those numbers in a worker thread and runs the handler again
with them resolved, as FUSE_IOCTL_RETRY does for unrestricted ioctls. **Rule for handlers:
call ``fget`` before changing any state.**

`BytesAddressSpace` and `FakeCaller` serve unit tests: a flat bytearray as a process's memory.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import attrs

from .errors import KernelError

log = logging.getLogger("vfiofs.mm")

PAGE_SIZE = 4096
PAGE_SHIFT = 12
CAP_SYS_RAWIO = 17
CAP_IPC_LOCK = 14
CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24


class MemorySource(Protocol):
    """Memory an IOMMU mapping points at: a process's address space (IOAS_MAP,
    MAP_DMA) or the pages of a file (IOAS_MAP_FILE). DMA reads and writes it.

    Attributes:
        tgid: the process that mapped it.
    """

    tgid: int

    def read(self, addr: int, size: int) -> bytes:
        """Read ``size`` bytes at ``addr``. Raises KernelError(EFAULT)."""
        ...

    def write(self, addr: int, data: bytes) -> None:
        """Write ``data`` at ``addr``, honouring page protections. Raises EFAULT."""
        ...


@runtime_checkable
class AddressSpace(MemorySource, Protocol):
    """One process's memory, the kernel's ``mm``. Lives as long as the daemon knows the
    process, so a device can DMA into it long after the MAP_DMA call returned.

    Attributes:
        tgid: the process id.
        locked_vm: bytes charged against RLIMIT_MEMLOCK (type1 accounting), per process.
    """

    tgid: int
    locked_vm: int

    def check_range(self, addr: int, size: int, *, write: bool) -> None:
        """Check that ``[addr, addr+size)`` is mapped (and writable if ``write``), as
        pinning user pages would. Raises KernelError(EFAULT)."""
        ...

    def memlock_limit(self) -> int:
        """RLIMIT_MEMLOCK (soft) in bytes; ``-1`` for unlimited."""
        ...


class FileMemory(MemorySource, Protocol):
    """A caller's file mapped into the daemon (IOAS_MAP_FILE): read and write at file
    offsets, as DMA through an area of the file does. Kept until ``close``.

    Attributes:
        tgid: the process that handed it over.
        size: the file's size when it was taken.
        shmem: a memfd, tmpfs or hugetlbfs file (``memfd_pin_folios`` pins only those).
        areas: the IOAS areas mapping it; the last one to go closes it.
    """

    tgid: int
    size: int
    shmem: bool
    areas: int

    def close(self) -> None:
        """Drop the daemon's duplicate of the file (and its mapping)."""
        ...


def account_locked_vm(
    mm: AddressSpace, size: int, *, inc: bool = True, bypass_rlim: bool = False
) -> None:
    """Charge (or with ``inc=False`` uncharge) ``size`` bytes of pinned memory to
    ``mm.locked_vm``: the kernel's ``__account_locked_vm`` (mm/util.c), the one rule for
    RLIMIT_MEMLOCK that vfio type1 and iommufd both pin against.

    A charge past RLIMIT_MEMLOCK is ENOMEM and nothing is charged, unless
    ``bypass_rlim``: the caller had CAP_IPC_LOCK when it mapped (type1's
    ``dma->lock_cap``). iommufd does not charge such callers at all
    (``IOPT_PAGES_ACCOUNT_NONE``), so it does not call this for them.

    Raises:
        KernelError: ENOMEM.
    """
    if not inc:
        mm.locked_vm -= size
        return
    limit = mm.memlock_limit()
    if not bypass_rlim and limit >= 0 and mm.locked_vm + size > limit:
        log.warning(
            "RLIMIT_MEMLOCK (%d bytes) exceeded by process %d: %d locked, %d more",
            limit,
            mm.tgid,
            mm.locked_vm,
            size,
        )
        raise KernelError(errno.ENOMEM, "RLIMIT_MEMLOCK exceeded")
    mm.locked_vm += size


class EventFd(Protocol):
    """An eventfd the daemon holds for a caller (SET_IRQS), like ``eventfd_ctx``."""

    def signal(self) -> None:
        """Add 1 to the counter (``eventfd_signal``)."""
        ...

    def close(self) -> None:
        """Drop our reference."""
        ...


@attrs.define(eq=False)
class OurFile:
    """A caller's fd that is one of our own open handles (any node of our mount)."""

    handle: object


@attrs.define(eq=False)
class ForeignFile:
    """A caller's fd that is not ours. ``kind`` is ``"eventfd"`` or ``"other"``.

    For an eventfd, `take_eventfd` hands the reference to the core, which must ``close()``
    it when done; anything not taken is closed by the session after the request.
    """

    kind: str
    _eventfd: EventFd | None = None
    _file: FileMemory | None = None  # kind "file": the caller's regular file / memfd

    def take_file(self) -> FileMemory:
        """Take the memory of a regular file or memfd (IOAS_MAP_FILE). Raises
        KernelError(EBADF) if the fd is not one."""
        if self.kind != "file" or self._file is None:
            raise KernelError(errno.EBADF, "not a regular file or memfd")
        mem, self._file = self._file, None
        return mem

    def take_eventfd(self) -> EventFd:
        """Take ownership of the eventfd. Raises KernelError(EINVAL) if it is not one."""
        if self.kind != "eventfd" or self._eventfd is None:
            raise KernelError(errno.EINVAL, "not an eventfd")
        ev, self._eventfd = self._eventfd, None
        return ev

    def discard(self) -> None:
        """Close what was not taken."""
        if self._eventfd is not None:
            self._eventfd.close()
            self._eventfd = None
        if self._file is not None:
            self._file.close()
            self._file = None


FileRef = OurFile | ForeignFile


class NeedFds(Exception):
    """Raised by `Caller.fget` for fd numbers the session has yet to resolve."""

    def __init__(self, fds: Iterable[int]) -> None:
        super().__init__(tuple(fds))
        self.fds: tuple[int, ...] = tuple(fds)


class Caller(Protocol):
    """The process behind one request (the kernel's ``current``)."""

    tid: int
    uid: int
    gid: int

    @property
    def tgid(self) -> int:
        """The caller's process id."""
        ...

    @property
    def mm(self) -> AddressSpace:
        """The caller's memory; it outlives the call (devices DMA into it later)."""
        ...

    def copy_from_user(self, addr: int, size: int) -> bytes:
        """Read the caller's memory. Raises KernelError(EFAULT)."""
        ...

    def copy_to_user(self, addr: int, data: bytes) -> None:
        """Write the caller's memory. Raises KernelError(EFAULT)."""
        ...

    def fget(self, fd: int) -> FileRef:
        """The file behind the caller's fd number. Raises KernelError(EBADF) for a
        closed or negative fd, NeedFds when the session must resolve it first."""
        ...

    def fget_many(self, fds: Iterable[int]) -> list[FileRef]:
        """`fget` for several fds, asking for all unresolved ones at once."""
        ...

    def capable(self, cap: int) -> bool:
        """Whether the caller has capability ``cap`` (CAP_SYS_RAWIO, ...)."""
        ...

    def install_fd(self, file: object, addr: int | None) -> int:
        """Give the caller a new fd (O_CLOEXEC) for ``file``, one of our open files,
        as ``get_unused_fd_flags`` + ``fd_install`` do. The number is written as a u32
        at ``addr`` (a struct's ``out_..._fd``), or is the ioctl's return value when
        ``addr`` is None. Call it last, once nothing can fail. Raises
        KernelError(EOPNOTSUPP) where the session cannot create fds in the caller (a
        plain mount: a FUSE reply cannot; docs/internals.md, platform facts)."""
        ...


def strndup_user(caller: Caller, addr: int, n: int = PAGE_SIZE) -> bytes:
    """Copy a NUL-terminated string of at most ``n`` bytes, as the kernel's
    ``strndup_user``: EFAULT if unreadable, EINVAL if no NUL within ``n`` bytes.

    Reads page by page so that a short string near the end of a mapping works.
    """
    out = bytearray()
    while len(out) < n:
        chunk = min(PAGE_SIZE - ((addr + len(out)) % PAGE_SIZE), n - len(out))
        data = caller.copy_from_user(addr + len(out), chunk)
        nul = data.find(b"\0")
        if nul >= 0:
            return bytes(out + data[:nul])
        out += data
    raise KernelError(errno.EINVAL, "string longer than PAGE_SIZE")


# --- test doubles -------------------------------------------------------------------


@attrs.define(eq=False)
class BytesAddressSpace:
    """A process's memory as one bytearray at ``base``; for unit tests.

    ``readonly`` holds page-aligned ``(start, end)`` ranges where writes fault.
    """

    size: int = 1 << 20
    base: int = 0x10000
    tgid: int = 4242
    locked_vm: int = 0
    memlock: int = -1
    readonly: list[tuple[int, int]] = attrs.Factory(list)
    mem: bytearray = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.mem = bytearray(self.size)

    def _span(self, addr: int, size: int) -> slice:
        if size < 0 or addr < self.base or addr + size > self.base + self.size:
            raise KernelError(errno.EFAULT, f"bad address {addr:#x}+{size:#x}")
        return slice(addr - self.base, addr - self.base + size)

    def read(self, addr: int, size: int) -> bytes:
        return bytes(self.mem[self._span(addr, size)])

    def write(self, addr: int, data: bytes) -> None:
        span = self._span(addr, len(data))
        for lo, hi in self.readonly:
            if addr < hi and addr + len(data) > lo:
                raise KernelError(errno.EFAULT, f"read-only page at {addr:#x}")
        self.mem[span] = data

    def check_range(self, addr: int, size: int, *, write: bool) -> None:
        self._span(addr, size)
        if write:
            for lo, hi in self.readonly:
                if addr < hi and addr + size > lo:
                    raise KernelError(errno.EFAULT, "read-only range")

    def memlock_limit(self) -> int:
        return self.memlock


@attrs.define(eq=False)
class FakeEventFd:
    """An eventfd double that counts signals."""

    count: int = 0
    closed: bool = False

    def signal(self) -> None:
        self.count += 1

    def close(self) -> None:
        self.closed = True


@attrs.define(eq=False)
class FakeCaller:
    """A `Caller` over a `BytesAddressSpace`, with fds set up by the test in ``fds``."""

    mm: BytesAddressSpace = attrs.Factory(BytesAddressSpace)
    tid: int = 4242
    uid: int = 0
    gid: int = 0
    caps: frozenset[int] = frozenset({CAP_SYS_RAWIO, CAP_IPC_LOCK, CAP_SYS_ADMIN})
    fds: dict[int, FileRef] = attrs.Factory(dict)
    brk: int = 0

    @property
    def tgid(self) -> int:
        return self.mm.tgid

    def copy_from_user(self, addr: int, size: int) -> bytes:
        return self.mm.read(addr, size)

    def copy_to_user(self, addr: int, data: bytes) -> None:
        self.mm.write(addr, data)

    def fget(self, fd: int) -> FileRef:
        if fd < 0 or fd not in self.fds:
            raise KernelError(errno.EBADF, f"fd {fd}")
        return self.fds[fd]

    def fget_many(self, fds: Iterable[int]) -> list[FileRef]:
        return [self.fget(fd) for fd in fds]

    def capable(self, cap: int) -> bool:
        return cap in self.caps

    def install_fd(self, file: object, addr: int | None) -> int:
        fd = max([2, *self.fds]) + 1
        self.fds[fd] = OurFile(file)
        if addr is not None:
            self.copy_to_user(addr, fd.to_bytes(4, "little"))
        return fd

    # convenience for tests: place bytes in the fake memory and get their address
    def alloc(self, data: bytes | int, *, align: int = 8) -> int:
        """Copy ``data`` (or that many zero bytes) into fresh fake memory; its address."""
        blob = bytes(data)
        cur = max(self.brk, self.mm.base)
        cur = (cur + align - 1) // align * align
        self.mm.write(cur, blob)
        self.brk = cur + max(len(blob), 1)
        return cur
