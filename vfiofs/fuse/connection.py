"""`FuseConnection`: the protocol state of one mount, as h11's ``Connection``.

``receive(buf)`` turns the bytes of one /dev/fuse read into a typed request, and the
``reply*`` methods turn answers into bytes. States go AWAITING_INIT -> NEGOTIATING ->
RUNNING -> DESTROYED through one transition table; version-dependent sizes are decided
only here.
Any input gives a request, `BadRequest`, `Unknown` or `ProtocolError`, nothing else.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import Any, Final

from ..abi import fuse_kernel as k
from ..abi._cstruct import CTuple
from ..abi.fuse_kernel import FuseInitFlags as F, FuseOpcode as Op
from ..errors import ProtocolError
from . import requests as rq
from ._opcodes import OPCODES, opname

_IN = k.FuseInHeader.STRUCT
_OUT = k.FuseOutHeader.STRUCT
_IN_SIZE: Final = k.FuseInHeader.SIZE
# fuse_out_header + fuse_ioctl_out, packed in one go
_IOCTL_REPLY = struct.Struct(
    "<" + k.FuseOutHeader.STRUCT.format[1:] + k.FuseIoctlOut.STRUCT.format[1:]
)
_IOCTL_LEN: Final = _IOCTL_REPLY.size
_new = tuple.__new__
_INIT_OUT_ZEROS: Final = (0,) * 11 + (bytes(22),)  # fuse_init_out after major, minor

DEFAULT_WANT: Final = (
    F.FUSE_BIG_WRITES
    | F.FUSE_MAX_PAGES
    | F.FUSE_PARALLEL_DIROPS
    | F.FUSE_HAS_IOCTL_DIR
    | F.FUSE_ATOMIC_O_TRUNC
    | F.FUSE_INIT_EXT
)


class ConnState(enum.Enum):
    AWAITING_INIT = "awaiting-init"
    NEGOTIATING = "negotiating"  # INIT received, its reply not yet built
    RUNNING = "running"
    DESTROYED = "destroyed"


class Sent(enum.Enum):
    """Events of our own side (received requests are events by their opcode)."""

    INIT_REPLY = "init-reply"
    INIT_RETRY = "init-retry"  # our major is older: the kernel sends INIT again


_RUNNING: Final = ConnState.RUNNING

# All transitions live here (h11's _state.py): state -> {event: next state}. An event
# missing from its state's row is a protocol error, except that RUNNING takes every
# request other than INIT and stays RUNNING.
_TRANSITIONS: Final[dict[ConnState, dict[int | Sent, ConnState]]] = {
    ConnState.AWAITING_INIT: {Op.FUSE_INIT: ConnState.NEGOTIATING},
    ConnState.NEGOTIATING: {
        Sent.INIT_REPLY: ConnState.RUNNING,
        Sent.INIT_RETRY: ConnState.AWAITING_INIT,
    },
    ConnState.RUNNING: {Op.FUSE_DESTROY: ConnState.DESTROYED},
    ConnState.DESTROYED: {},
}
# the requests that RUNNING checks against the table (both take the slow path)
_LIFECYCLE: Final = frozenset({Op.FUSE_INIT, Op.FUSE_DESTROY})

_Fixed = tuple[
    type[rq.Request[Any]], type[CTuple], Callable[..., tuple[Any, ...]], int, int
]
# opcodes whose body is one fixed struct: decoded without the general path. The last item
# is the index of the field that counts trailing data (IOCTL's in_size), or -1.
_FIXED: Final[dict[int, _Fixed]] = {
    op: (
        spec.cls,
        spec.arg,
        spec.arg.STRUCT.unpack_from,
        spec.arg.SIZE,
        spec.arg.FIELDS.index(spec.rest[0]) if spec.rest else -1,
    )
    for op, spec in OPCODES.items()
    if spec.arg is not None and not spec.names and op != Op.FUSE_INIT
}


def _bad(hdr: k.FuseInHeader, why: str) -> rq.BadRequest:
    return rq.BadRequest(hdr, None, why.encode(), b"")


class FuseConnection:
    """The kernel's FUSE protocol for one mount, without any I/O."""

    def __init__(
        self,
        *,
        max_write: int = 1 << 20,
        max_readahead: int = 1 << 17,
        want: int = DEFAULT_WANT,
        time_gran: int = 1,
        max_background: int = 64,
    ) -> None:
        self._state = ConnState.AWAITING_INIT
        self.minor = 0
        self.flags = 0  # negotiated init flags (flags2 in the high word)
        self.max_write = max_write
        self.max_readahead = max_readahead
        self.want = int(want)
        self.time_gran = time_gran
        self.max_background = max_background

    @property
    def state(self) -> ConnState:
        """Where the connection is: only `_process` changes it."""
        return self._state

    def _process(self, event: int | Sent) -> None:
        """Take one transition of `_TRANSITIONS`, or raise."""
        nxt = _TRANSITIONS[self._state].get(event)
        if nxt is None:
            what = event.value if isinstance(event, Sent) else opname(event)
            raise ProtocolError(f"{what} in state {self._state.value}")
        self._state = nxt

    # --- requests ---------------------------------------------------------------------

    def receive(self, buf: bytes | bytearray | memoryview) -> rq.Request[Any]:
        """Parse one request (exactly one /dev/fuse read).

        Raises:
            ProtocolError: the header does not parse, its length is not the read's, or the
                kernel broke the INIT/DESTROY order. Malformed bodies give `BadRequest`.
        """
        n = len(buf)
        if n < _IN_SIZE:
            raise ProtocolError(f"short read: {n} bytes")
        hdr = _new(k.FuseInHeader, _IN.unpack_from(buf))
        if hdr[0] != n:
            raise ProtocolError(f"header says {hdr.len} bytes, read {n}")
        if self._state is not _RUNNING:
            self._process(hdr.opcode)
        fast = _FIXED.get(hdr[1])
        if fast is not None and not hdr[7]:
            # the common case: one fixed struct, no names, no extensions, no data
            cls, argcls, unpack, size, counts_data = fast
            if n - _IN_SIZE == size:
                args = unpack(buf, _IN_SIZE)
                if counts_data < 0 or not args[counts_data]:
                    return _new(cls, (hdr, _new(argcls, args), b"", b""))
            elif n - _IN_SIZE > size and counts_data < 0:
                return _new(cls, (hdr, _new(argcls, unpack(buf, _IN_SIZE)), b"", b""))
        return self._receive_slow(hdr, buf, n)

    def _receive_slow(
        self, hdr: k.FuseInHeader, buf: bytes | bytearray | memoryview, n: int
    ) -> rq.Request[Any]:
        opcode = hdr.opcode
        spec = OPCODES.get(opcode)
        if spec is None:
            return rq.Unknown(hdr, None)
        if opcode in _LIFECYCLE and self._state is _RUNNING:
            self._process(opcode)
        end = n - hdr.total_extlen * 8
        if end < _IN_SIZE:
            return _bad(hdr, "extensions longer than the message")
        arg: CTuple | None = None
        pos = _IN_SIZE
        st = spec.arg
        if st is not None:
            size = st.SIZE
            if opcode == Op.FUSE_INIT and end - pos >= 8:
                minor = int.from_bytes(buf[pos + 4 : pos + 8], "little")
                if minor < 36:  # fuse_init_in had no flags2 before 7.36
                    size = k.FUSE_COMPAT_INIT_IN_SIZE
            if end - pos < size:
                return _bad(hdr, f"{spec.name}: {end - pos} bytes, need {size}")
            if size == st.SIZE:
                arg = st.unpack_from(buf, pos)
            else:
                old = k.FuseInitInCompat.unpack_from(buf, pos)
                arg = k.FuseInitIn(
                    old.major, old.minor, old.max_readahead, old.flags, 0, bytes(44)
                )
            pos += size
        name = b""
        if spec.names:
            body = bytes(buf[pos:end])
            nul = body.find(b"\0")
            if nul < 0:
                return _bad(hdr, f"{spec.name}: name without NUL")
            name = body[:nul]
            pos += nul + 1
        data = b""
        if spec.rest is not None and arg is not None:
            field, unit = spec.rest
            need = getattr(arg, field) * unit
            if end - pos < need:
                return _bad(
                    hdr, f"{spec.name}: {field} says {need} bytes, {end - pos} follow"
                )
            data = bytes(buf[pos : pos + need])
        return _new(spec.cls, (hdr, arg, name, data))

    # --- replies ----------------------------------------------------------------------

    def init_reply(self, req: rq.Init) -> bytes:
        """Negotiate: our minor is the smaller of the kernel's and ours; flags are what we
        want of what the kernel offers. Moves to RUNNING.

        Raises:
            ProtocolError: the kernel is older than 7.31, or no INIT is awaiting a reply.
        """
        a = req.arg
        if a.major > k.FUSE_KERNEL_VERSION:
            # tell the kernel our major; it sends INIT again
            self._process(Sent.INIT_RETRY)
            ours = k.FuseInitOut(
                k.FUSE_KERNEL_VERSION, k.FUSE_KERNEL_MINOR_VERSION, *_INIT_OUT_ZEROS
            )
            return self.reply(req, ours.pack()[: k.FUSE_COMPAT_22_INIT_OUT_SIZE])
        if a.major < k.FUSE_KERNEL_VERSION or a.minor < k.FUSE_MIN_MINOR:
            raise ProtocolError(
                f"kernel FUSE {a.major}.{a.minor} is older than 7.{k.FUSE_MIN_MINOR}"
            )
        self._process(Sent.INIT_REPLY)
        offered = a.flags | ((a.flags2 << 32) if a.flags & F.FUSE_INIT_EXT else 0)
        flags = self.want & offered
        self.minor = min(a.minor, k.FUSE_KERNEL_MINOR_VERSION)
        self.flags = flags
        max_pages = (self.max_write + 4095) // 4096 if flags & F.FUSE_MAX_PAGES else 0
        out = k.FuseInitOut(
            major=k.FUSE_KERNEL_VERSION,
            minor=self.minor,
            max_readahead=min(a.max_readahead, self.max_readahead),
            flags=flags & 0xFFFFFFFF,
            max_background=self.max_background,
            congestion_threshold=self.max_background * 3 // 4,
            max_write=self.max_write,
            time_gran=self.time_gran,
            max_pages=max_pages,
            map_alignment=0,
            flags2=flags >> 32,
            max_stack_depth=0,
            request_timeout=0,
            unused=bytes(22),
        ).pack()
        return self.reply(req, out)  # minor >= 31: the whole fuse_init_out

    def reply(self, req: rq.Request[Any], *parts: bytes) -> bytes:
        """A successful reply: the header and the body parts."""
        body = b"".join(parts) if len(parts) != 1 else parts[0]
        return _OUT.pack(16 + len(body), 0, req.header.unique) + body

    def reply_ioctl(self, req: rq.Request[Any], result: int) -> bytes:
        """An IOCTL reply (``fuse_ioctl_out``), packed in one go: the hot path."""
        return _IOCTL_REPLY.pack(_IOCTL_LEN, 0, req.header.unique, result, 0, 0, 0)

    def reply_error(self, req: rq.Request[Any], errno: int) -> bytes:
        """An error reply (header only, ``error = -errno``)."""
        return _OUT.pack(16, -errno, req.header.unique)

    def notify_poll(self, kh: int) -> bytes:
        """FUSE_NOTIFY_POLL: wake the poller registered with ``kh``."""
        wakeup = k.FuseNotifyPollWakeupOut(kh).pack()
        return (
            _OUT.pack(16 + len(wakeup), k.FuseNotifyCode.FUSE_NOTIFY_POLL, 0) + wakeup
        )
