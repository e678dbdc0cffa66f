"""Ioctl tables: the kernel's ``IOCTL_OP`` / ``switch (cmd)`` as data.

Each file-like core object has a module-level `IoctlTable` next to its handlers. The
generic `IoctlTable.call` does what every kernel handler does first, in the kernel's order:
copy ``min_size`` bytes (EFAULT), check ``argsz``/``size`` (EINVAL), and for iommufd-style
structs apply ``copy_struct_from_user`` (a longer struct must have an all-zero tail, else
E2BIG). Handlers get a `Ucmd` and never compute sizes.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

import attrs

from .abi._cstruct import CStruct
from .errors import KernelError
from .uaccess import Caller


class ArgKind(enum.Enum):
    """How an ioctl uses its ``arg``."""

    NONE = "none"  # arg ignored (GET_API_VERSION, RESET)
    VALUE = "value"  # arg is an integer (CHECK_EXTENSION, SET_IOMMU)
    PTR = "ptr"  # the handler reads ``int *`` / ``char *`` itself
    ARGSZ = "argsz"  # vfio struct led by u32 argsz: copy minsz, argsz < minsz -> EINVAL
    SIZE = "size"  # iommufd struct led by u32 size: copy_struct_from_user rules


@attrs.frozen
class Ucmd:
    """One ioctl call as a handler sees it (the kernel's ``iommufd_ucmd``).

    Attributes:
        caller: who called.
        arg: the raw ``arg`` (a pointer, or the value for ARG VALUE commands).
        cmd: the parsed struct (zero-extended past what the user gave), or None.
        argsz: the user's ``argsz``/``size`` field (0 when there is no struct).
    """

    caller: Caller
    arg: int
    cmd: Any = None
    argsz: int = 0

    def respond(self, st: CStruct, *, limit: int | None = None) -> None:
        """Copy ``st`` back to the caller, never past ``argsz`` (nor ``limit`` bytes)."""
        data = st.pack()
        n = min(len(data), self.argsz or len(data))
        if limit is not None:
            n = min(n, limit)
        self.caller.copy_to_user(self.arg, data[:n])

    def copy_to(self, offset: int, data: bytes) -> None:
        """Write trailing data at ``arg + offset`` (capability chains), bounded by argsz."""
        if offset + len(data) > self.argsz:
            raise KernelError(
                errno.EFAULT, "write past argsz"
            )  # a handler bug, not user's
        self.caller.copy_to_user(self.arg + offset, data)


O = TypeVar("O")
Handler = Callable[[O, Ucmd], int]


@attrs.frozen
class FileOperations(Generic[O]):
    """The ioctl entries of a file type's ``struct file_operations``: how an open file
    of that type runs a command (``unlocked_ioctl``) and names one (for ``--trace``).

    A file's struct lives in a private header that many modules share; the struct keeps
    the `FileOperations` it was opened with, as ``file->f_op``, so only the module that
    opens the file needs the ioctl handlers, and the header imports none of them.
    """

    unlocked_ioctl: Callable[[O, Caller, int, int], int]
    ioctl_name: Callable[[O, int], str | None]


@attrs.frozen
class IoctlOp(Generic[O]):
    """One entry: the command, its kernel name and handler, and its argument struct."""

    cmd: int
    name: str
    handler: Handler[O]
    kind: ArgKind = ArgKind.NONE
    struct: type[CStruct] | None = None
    last: str | None = None

    @property
    def min_size(self) -> int:
        """``offsetofend(struct, last)``: the bytes the kernel insists on."""
        if self.struct is None:
            return 0
        return self.struct.offsetofend(self.last) if self.last else self.struct.SIZE


S = TypeVar("S", bound=CStruct)


def copy_struct_from_user(caller: Caller, st: type[S], addr: int, usize: int) -> S:
    """The kernel's ``copy_struct_from_user``: zero-extend a short struct; a longer one
    must have only zero bytes past ``st.SIZE`` (else E2BIG)."""
    ksize = st.SIZE
    if usize > ksize:
        tail = caller.copy_from_user(addr + ksize, usize - ksize)
        if any(tail):
            raise KernelError(errno.E2BIG, "non-zero tail past the known struct")
    data = caller.copy_from_user(addr, min(usize, ksize))
    return st.unpack_from(data.ljust(ksize, b"\0"))


def vfio_info_cap_chain(
    caps: Sequence[CStruct | bytes], base: int, *, align: int = 1
) -> bytes:
    """The capability chain of a vfio ``*_INFO`` reply, as it sits at offset ``base`` of
    the user's buffer (``vfio_info_cap_add`` + ``vfio_info_cap_shift``, vfio_main.c).

    Each cap starts with ``struct vfio_info_cap_header`` and follows the one before,
    padded to ``align`` bytes (iommufd's compat GET_INFO aligns each to 8; the vfio
    helpers do not pad); its ``next`` is the buffer offset of the cap after it, 0 for
    the last.
    """
    blobs = [c if isinstance(c, bytes) else c.pack() for c in caps]
    out = bytearray()
    for i, blob in enumerate(blobs):
        start = len(out)
        out += blob + bytes(-len(blob) % align)
        nxt = base + len(out) if i + 1 < len(blobs) else 0
        out[start + 4 : start + 8] = nxt.to_bytes(4, "little")
    return bytes(out)


class IoctlTable(Generic[O]):
    """Command number -> `IoctlOp`, plus the generic argument handling."""

    def __init__(self, ops: Iterable[IoctlOp[O]]) -> None:
        self.ops: dict[int, IoctlOp[O]] = {}
        for op in ops:
            if op.cmd in self.ops:
                raise ValueError(f"duplicate ioctl {op.name}")
            self.ops[op.cmd] = op

    def __contains__(self, cmd: int) -> bool:
        return cmd in self.ops

    def name(self, cmd: int) -> str | None:
        """The kernel name of ``cmd``, for traces."""
        op = self.ops.get(cmd)
        return op.name if op else None

    def dispatch(self, obj: O, caller: Caller, cmd: int, arg: int) -> int:
        """Run ``cmd``; ENOTTY when the table does not know it."""
        op = self.ops.get(cmd)
        if op is None:
            raise KernelError(errno.ENOTTY, f"unknown ioctl {cmd:#x}")
        return self.call(op, obj, caller, arg)

    @staticmethod
    def call(op: IoctlOp[O], obj: O, caller: Caller, arg: int) -> int:
        """Copy and check the argument the way ``op.kind`` says, then run the handler."""
        if op.kind is ArgKind.ARGSZ:
            assert op.struct is not None
            minsz = op.min_size
            raw = caller.copy_from_user(arg, minsz)
            argsz = int.from_bytes(raw[:4], "little")
            if argsz < minsz:
                raise KernelError(errno.EINVAL, f"{op.name}: argsz {argsz} < {minsz}")
            st = op.struct.unpack_from(raw.ljust(op.struct.SIZE, b"\0"))
            _trace(caller, st)
            return op.handler(obj, Ucmd(caller, arg, st, argsz))
        if op.kind is ArgKind.SIZE:
            assert op.struct is not None
            usize = int.from_bytes(caller.copy_from_user(arg, 4), "little")
            if usize < op.min_size:
                raise KernelError(
                    errno.EINVAL, f"{op.name}: size {usize} < {op.min_size}"
                )
            st = copy_struct_from_user(caller, op.struct, arg, usize)
            _trace(caller, st)
            return op.handler(obj, Ucmd(caller, arg, st, usize))
        if op.kind is ArgKind.VALUE:
            _trace(caller, arg)
        return op.handler(obj, Ucmd(caller, arg))


def _trace(caller: Caller, what: object) -> None:
    """Record the decoded argument for ``--trace`` (callers that trace have a list)."""
    trace: list[str] | None = getattr(caller, "trace", None)
    if trace is not None:
        trace.append(repr(what))
