"""`FuseConnection`: the protocol state of one mount, as h11's ``Connection``.

``receive(buf)`` turns the bytes of one /dev/fuse read into a typed request, and the
``reply*`` methods turn answers into bytes. States go AWAITING_INIT -> RUNNING ->
DESTROYED through one transition table; version-dependent sizes are decided only here.
Any input gives a request, `BadRequest`, `Unknown` or `ProtocolError`, nothing else.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

from ..abi import fuse_kernel as k
from ..abi.fuse_kernel import FuseInitFlags as F, FuseOpcode as Op
from ..errors import ProtocolError
from . import requests as rq
from ._opcodes import OPCODES

_IN = k.FuseInHeader.STRUCT  # type: ignore[attr-defined]
_OUT = k.FuseOutHeader.STRUCT  # type: ignore[attr-defined]
_IN_SIZE: Final = 40
_IOCTL_REPLY = struct.Struct("<IiQiIII")
_new = tuple.__new__

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
    RUNNING = "running"
    DESTROYED = "destroyed"


# (state, event) -> next state; anything else is a protocol error
_TRANSITIONS: Final = {
    (ConnState.AWAITING_INIT, Op.FUSE_INIT): ConnState.RUNNING,
    (ConnState.RUNNING, Op.FUSE_DESTROY): ConnState.DESTROYED,
}


# opcodes whose body is exactly one fixed struct: decoded without the general path
_FIXED: Final = {
    op: (spec.cls, spec.arg, spec.arg.STRUCT.unpack_from, spec.arg.SIZE, spec.rest)
    for op, spec in OPCODES.items()
    if spec.arg is not None
    and not spec.names
    and op not in (Op.FUSE_INIT, Op.FUSE_WRITE, Op.FUSE_BATCH_FORGET)
}


def _bad(hdr: k.FuseInHeader, why: str) -> rq.BadRequest:
    return _new(rq.BadRequest, (hdr, None, why.encode(), b""))  # type: ignore[no-any-return]


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
        self.state = ConnState.AWAITING_INIT
        self.running = False  # state is RUNNING (checked on every request)
        self.minor = 0
        self.flags = 0  # negotiated init flags (flags2 in the high word)
        self.max_write = max_write
        self.max_readahead = max_readahead
        self.want = int(want)
        self.time_gran = time_gran
        self.max_background = max_background

    # --- requests ---------------------------------------------------------------------

    def receive(self, buf: bytes | bytearray | memoryview) -> rq.Request:
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
        if not self.running:
            self._transition(hdr.opcode)
        fast = _FIXED.get(hdr[1])
        if fast is not None and not hdr[7]:
            # the common case: one fixed struct, no names, no extensions
            cls, argcls, unpack, size, rest = fast
            if n - _IN_SIZE == size or (n - _IN_SIZE > size and not rest):
                return _new(cls, (hdr, _new(argcls, unpack(buf, _IN_SIZE)), b"", b""))  # type: ignore[no-any-return]
        return self._receive_slow(hdr, buf, n)

    def _transition(self, opcode: int) -> None:
        nxt = _TRANSITIONS.get((self.state, opcode))
        if nxt is None:
            raise ProtocolError(f"opcode {opcode} in state {self.state.value}")

    def _receive_slow(
        self, hdr: k.FuseInHeader, buf: bytes | bytearray | memoryview, n: int
    ) -> rq.Request:
        opcode = hdr.opcode
        spec = OPCODES.get(opcode)
        if spec is None:
            return _new(rq.Unknown, (hdr, None, b"", b""))  # type: ignore[no-any-return]
        end = n - hdr.total_extlen * 8
        if end < _IN_SIZE:
            return _bad(hdr, "extensions longer than the message")
        arg = None
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
                arg = k.FuseInitIn(
                    *k.FuseInitInCompat.unpack_from(buf, pos), 0, bytes(44)
                )  # type: ignore[attr-defined]
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
        if spec.rest and pos < end:
            data = bytes(buf[pos:end])
        if opcode == Op.FUSE_WRITE:
            if len(data) < arg.size:
                return _bad(hdr, f"WRITE of {arg.size} bytes carries {len(data)}")
            data = data[: arg.size]
        elif (
            opcode == Op.FUSE_BATCH_FORGET
            and len(data) < arg.count * k.FuseForgetOne.SIZE
        ):  # type: ignore[attr-defined]
            return _bad(hdr, "BATCH_FORGET shorter than its count")
        elif opcode == Op.FUSE_DESTROY:
            self.state = ConnState.DESTROYED
            self.running = False
        return _new(spec.cls, (hdr, arg, name, data))  # type: ignore[no-any-return]

    # --- replies ----------------------------------------------------------------------

    def init_reply(self, req: rq.Init) -> bytes:
        """Negotiate: our minor is the smaller of the kernel's and ours; flags are what we
        want of what the kernel offers. Moves to RUNNING.

        Raises:
            ProtocolError: the kernel is older than 7.31.
        """
        a = req.arg
        if a.major > k.FUSE_KERNEL_VERSION:
            # tell the kernel our major; it sends INIT again
            return self.reply(
                req,
                k.FuseInitOut(
                    k.FUSE_KERNEL_VERSION,
                    k.FUSE_KERNEL_MINOR_VERSION,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    bytes(22),
                ).pack()[:24],
            )  # type: ignore[attr-defined]
        if a.major < k.FUSE_KERNEL_VERSION or a.minor < k.FUSE_MIN_MINOR:
            raise ProtocolError(
                f"kernel FUSE {a.major}.{a.minor} is older than 7.{k.FUSE_MIN_MINOR}"
            )
        offered = a.flags | ((a.flags2 << 32) if a.flags & F.FUSE_INIT_EXT else 0)
        flags = self.want & offered
        self.minor = min(a.minor, k.FUSE_KERNEL_MINOR_VERSION)
        self.flags = flags
        self.state = ConnState.RUNNING
        self.running = True
        max_pages = (self.max_write + 4095) // 4096 if flags & F.FUSE_MAX_PAGES else 0
        out = k.FuseInitOut(  # type: ignore[call-arg]
            k.FUSE_KERNEL_VERSION,
            self.minor,
            min(a.max_readahead, self.max_readahead),
            flags & 0xFFFFFFFF,
            self.max_background,
            self.max_background * 3 // 4,
            self.max_write,
            self.time_gran,
            max_pages,
            0,
            flags >> 32,
            0,
            0,
            bytes(22),
        ).pack()
        return self.reply(
            req, out if self.minor > 22 else out[: k.FUSE_COMPAT_22_INIT_OUT_SIZE]
        )

    def reply(self, req: rq.Request, *parts: bytes) -> bytes:
        """A successful reply: the header and the body parts."""
        body = b"".join(parts) if len(parts) != 1 else parts[0]
        return _OUT.pack(16 + len(body), 0, req.header.unique) + body  # type: ignore[no-any-return]

    def reply_ioctl(self, req: rq.Request, result: int) -> bytes:
        """An IOCTL reply (``fuse_ioctl_out``), packed in one go: the hot path."""
        return _IOCTL_REPLY.pack(32, 0, req.header.unique, result, 0, 0, 0)  # type: ignore[no-any-return]

    def reply_error(self, req: rq.Request, errno: int) -> bytes:
        """An error reply (header only, ``error = -errno``)."""
        return _OUT.pack(16, -errno, req.header.unique)  # type: ignore[no-any-return]

    def notify_poll(self, kh: int) -> bytes:
        """FUSE_NOTIFY_POLL: wake the poller registered with ``kh``."""
        return _OUT.pack(24, k.FuseNotifyCode.FUSE_NOTIFY_POLL, 0) + kh.to_bytes(
            8, "little"
        )  # type: ignore[no-any-return]


def encode_request(req: rq.Request, *, extensions: bytes = b"") -> bytes:
    """The kernel's bytes for ``req`` (tests play the kernel with this)."""
    from ._opcodes import SPEC_OF_CLASS

    _, spec = SPEC_OF_CLASS[type(req)]
    body = b""
    if req.arg is not None:
        body += req.arg.pack()
        if isinstance(req, rq.Init) and req.arg.minor < 36:
            body = body[: k.FUSE_COMPAT_INIT_IN_SIZE]
    if spec.names:
        body += req.name + b"\0"
    body += req.data
    h = req.header
    length = _IN_SIZE + len(body) + len(extensions)
    head = _IN.pack(
        length,
        h.opcode,
        h.unique,
        h.nodeid,
        h.uid,
        h.gid,
        h.pid,
        len(extensions) // 8,
        0,
    )
    return head + body + extensions  # type: ignore[no-any-return]
