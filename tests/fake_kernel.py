"""The kernel's side of /dev/fuse, for tests (h11's ``tests/helpers.py``).

`encode_request` builds the bytes the kernel would send for a request, `decode_reply` and
`parse_dirents` read what the daemon answers, and `FakeKernel` joins the two over a
``socketpair(AF_UNIX, SOCK_SEQPACKET)``: one message per read and per write, as on
/dev/fuse, so the daemon's session runs unchanged on ``FakeKernel.daemon`` and a test plays
the kernel with ``send``/``reply``. None of this is production code.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

import trio

from vfiofs.abi import fuse_kernel as k
from vfiofs.abi.fuse_kernel import FuseOpcode as Op
from vfiofs.fuse import requests as rq
from vfiofs.fuse._opcodes import OPCODES

_SPEC_OF_CLASS = {s.cls: (op, s) for op, s in OPCODES.items()}
_IN_SIZE = k.FuseInHeader.SIZE


def encode_request(req: rq.Request[Any], *, extensions: bytes = b"") -> bytes:
    """The kernel's bytes for ``req`` (the header's ``len`` and ``total_extlen`` are
    computed; the other header fields are taken as given)."""
    _, spec = _SPEC_OF_CLASS[type(req)]
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
    head = h._replace(len=length, total_extlen=len(extensions) // 8, padding=0)
    return head.pack() + body + extensions


# reply body layouts: the structs a successful reply carries, in order
_REPLY_BODY: dict[int, tuple[type[Any], ...]] = {
    Op.FUSE_GETATTR: (k.FuseAttrOutHead, k.FuseAttr),
    Op.FUSE_SETATTR: (k.FuseAttrOutHead, k.FuseAttr),
    Op.FUSE_LOOKUP: (k.FuseEntryOutHead, k.FuseAttr),
    Op.FUSE_OPEN: (k.FuseOpenOut,),
    Op.FUSE_OPENDIR: (k.FuseOpenOut,),
    Op.FUSE_WRITE: (k.FuseWriteOut,),
    Op.FUSE_STATFS: (k.FuseKstatfs,),
    Op.FUSE_IOCTL: (k.FuseIoctlOut,),
    Op.FUSE_POLL: (k.FusePollOut,),
    Op.FUSE_INIT: (k.FuseInitOut,),
    Op.FUSE_LISTXATTR: (k.FuseGetxattrOut,),
    Op.FUSE_GETXATTR: (k.FuseGetxattrOut,),
}


def decode_reply(
    opcode: int, buf: bytes
) -> tuple[k.FuseOutHeader, tuple[Any, ...] | bytes]:
    """Split a reply into its header and its parsed body (structs), or raw bytes for
    READ, READLINK, READDIR and error replies. A short INIT reply (minor <= 22) is
    zero-extended, as the kernel does."""
    hdr = k.FuseOutHeader.unpack_from(buf)
    assert hdr.len == len(buf), f"header says {hdr.len} bytes, reply has {len(buf)}"
    body = bytes(buf[16:])
    layout = _REPLY_BODY.get(opcode)
    if hdr.error or layout is None or not body:
        return hdr, body
    if opcode == Op.FUSE_INIT:
        body = body.ljust(k.FuseInitOut.SIZE, b"\0")
    parts = []
    pos = 0
    for st in layout:
        parts.append(st.unpack_from(body, pos))
        pos += st.SIZE
    assert pos == len(body), f"{len(body) - pos} bytes left after the body"
    return hdr, tuple(parts)


def parse_dirents(buf: bytes) -> list[tuple[int, int, int, bytes]]:
    """``(ino, off, type, name)`` records of a READDIR reply."""
    out = []
    pos = 0
    size = k.FuseDirent.SIZE
    while pos + size <= len(buf):
        d = k.FuseDirent.unpack_from(buf, pos)
        out.append(
            (d.ino, d.off, d.type, bytes(buf[pos + size : pos + size + d.namelen]))
        )
        pos += (size + d.namelen + 7) & ~7
    return out


def header(opcode: int, unique: int, nodeid: int = 0, **kw: int) -> k.FuseInHeader:
    """A request header; ``len`` is filled in by `encode_request`."""
    return k.FuseInHeader(
        0,
        opcode,
        unique,
        nodeid,
        kw.get("uid", os.getuid()),
        kw.get("gid", os.getgid()),
        kw.get("pid", os.getpid()),
        0,
        0,
    )


class DaemonEnd:
    """The daemon's end of the pair: an fd that reads one request per read and writes one
    reply per write, non-blocking, like an open /dev/fuse."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, buf: bytearray | memoryview) -> int:
        """One request into ``buf`` (raises BlockingIOError when none is queued)."""
        return os.readv(self.fileno(), [buf])

    def write(self, data: bytes) -> None:
        """One reply or notification."""
        os.write(self.fileno(), data)

    def close(self) -> None:
        self._sock.close()


class FakeKernel:
    """Both ends of a SOCK_SEQPACKET socketpair: ``daemon`` for the session under test,
    ``send``/``reply`` for the test playing the kernel (trio, event-driven)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # room for a whole READ_BUFFER-sized message, as /dev/fuse allows
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.daemon = DaemonEnd(theirs)
        self._sock = trio.socket.from_stdlib_socket(ours)
        self._unique = 0

    def next_unique(self) -> int:
        self._unique += 2  # the kernel's uniques are even (odd ones mark interrupts)
        return self._unique

    async def send_raw(self, data: bytes) -> None:
        await self._sock.send(data)

    async def send(self, req: rq.Request[Any]) -> None:
        await self.send_raw(encode_request(req))

    async def receive(self) -> bytes:
        """The next message the daemon wrote (reply or notification)."""
        return bytes(await self._sock.recv(1 << 21))

    def receive_nowait(self) -> bytes:
        """The next message if the daemon wrote one; BlockingIOError if not."""
        return os.read(self._sock.fileno(), 1 << 21)

    async def call(
        self,
        opcode: int,
        arg: Any = None,
        *,
        nodeid: int = 0,
        name: bytes = b"",
        data: bytes = b"",
    ) -> tuple[k.FuseOutHeader, tuple[Any, ...] | bytes]:
        """Send one request and wait for its reply (decoded)."""
        unique = self.next_unique()
        spec = OPCODES[opcode]
        await self.send(spec.cls(header(opcode, unique, nodeid), arg, name, data))
        raw = await self.receive()
        hdr, body = decode_reply(opcode, raw)
        assert hdr.unique == unique, f"reply to {hdr.unique}, expected {unique}"
        return hdr, body

    async def init(self, minor: int = k.FUSE_KERNEL_MINOR_VERSION) -> k.FuseInitOut:
        # every flag the kernel of that minor knew (FUSE_INIT_EXT, bit 30, came in 7.36)
        flags = 0xFFFFFFFF if minor >= 36 else (1 << 30) - 1
        hdr, body = await self.call(
            Op.FUSE_INIT, k.FuseInitIn(7, minor, 1 << 17, flags, 0xFFFF, bytes(44))
        )
        assert hdr.error == 0 and isinstance(body, tuple)
        out: k.FuseInitOut = body[0]
        return out

    def close(self) -> None:
        self._sock.close()
        self.daemon.close()


def unpack_error(reply: bytes) -> int:
    """The positive errno of an error reply (0 on success)."""
    return -struct.unpack_from("<i", reply, 4)[0]
