"""The serve loop over a SOCK_SEQPACKET socketpair standing in for /dev/fuse (no root):
the /dev/fuse transport reads and writes any fd that keeps message boundaries."""

from __future__ import annotations

import errno
import socket
import struct

import trio

from vfiofs.fs.node import Directory
from vfiofs.fs.tree import Tree
from vfiofs.fuse.connection import FuseConnection
from vfiofs.session.peer import FdResolver, ProcessTable
from vfiofs.session.serve import FuseSession

IN_HEADER = struct.Struct("<IIQQIIIHH")
OUT_HEADER = struct.Struct("<IiQ")
FUSE_GETATTR, FUSE_INIT = 3, 26


def message(
    opcode: int, unique: int, body: bytes, *, length: int | None = None
) -> bytes:
    n = IN_HEADER.size + len(body)
    return IN_HEADER.pack(length or n, opcode, unique, 1, 0, 0, 1, 0, 0) + body


async def recv(sock: socket.socket) -> bytes:
    await trio.lowlevel.wait_readable(sock)
    return sock.recv(1 << 16)


async def test_protocol_error_gets_eio_and_the_loop_goes_on() -> None:
    kernel, daemon = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    kernel.setblocking(False)
    daemon.setblocking(False)
    session = FuseSession(
        Tree(Directory()),
        "/nonexistent",
        daemon.fileno(),
        FuseConnection(),
        ProcessTable(),
        FdResolver(0),
        transport_name="dev",
    )
    init_in = struct.pack("<IIIII44s", 7, 45, 1 << 17, 0, 0, b"")
    with kernel, daemon:
        async with trio.open_nursery() as nursery:
            kernel.send(message(FUSE_INIT, 1, init_in))
            await session.handshake()
            assert session.transport.name == "dev"
            _, error, unique = OUT_HEADER.unpack_from(await recv(kernel))
            assert (error, unique) == (0, 1)
            nursery.start_soon(session.run, nursery)

            # a header whose length is not the message's: EIO to that request
            kernel.send(message(FUSE_GETATTR, 7, bytes(16), length=99))
            reply = await recv(kernel)
            assert OUT_HEADER.unpack(reply) == (16, -errno.EIO, 7)

            # too short to have a header: nothing to answer, and the loop goes on
            kernel.send(b"short")
            kernel.send(message(FUSE_GETATTR, 8, bytes(16)))
            _, error, unique = OUT_HEADER.unpack_from(await recv(kernel))
            assert (error, unique) == (0, 8)
            nursery.cancel_scope.cancel()
