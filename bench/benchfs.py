"""The vfiofs side of `make bench`: the same operations as bench/cserver.c, served by
vfiofs's own session (``python bench/benchfs.py MOUNTPOINT``; the transport comes from
``VFIOFS_TRANSPORT``)."""

from __future__ import annotations

import errno
import stat
import sys

import attrs
import trio

from vfiofs.abi.ioctl import _IO
from vfiofs.errors import KernelError
from vfiofs.fs.node import DeviceNode, Directory
from vfiofs.fs.tree import Tree
from vfiofs.session.serve import serve_until_signalled
from vfiofs.uaccess import Caller

BENCH_NOOP = _IO(ord("E"), 0)
BENCH_STRUCT = _IO(ord("E"), 1)
BENCH_STRUCT32 = _IO(ord("E"), 2)
BENCH_IN32 = _IO(ord("E"), 3)


@attrs.define(eq=False)
class BenchFile:
    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        return b"abcd"[:size]

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        if cmd == BENCH_NOOP:
            return 0
        if cmd == BENCH_STRUCT:
            data = caller.copy_from_user(arg, 64)
            caller.copy_to_user(arg, bytes((b + 1) & 0xFF for b in data))
            return 42
        if cmd == BENCH_STRUCT32:
            data = caller.copy_from_user(arg, 32)
            caller.copy_to_user(arg, bytes((b + 1) & 0xFF for b in data))
            return 0
        if cmd == BENCH_IN32:
            caller.copy_from_user(arg, 32)
            return 0
        raise KernelError(errno.ENOTTY)

    def release(self) -> None:
        pass


def build() -> Tree:
    root = Directory()
    root.add(
        "bench",
        DeviceNode(mode=stat.S_IFREG | 0o666, opener=lambda caller, flags: BenchFile()),
    )
    return Tree(root)


if __name__ == "__main__":
    trio.run(lambda: serve_until_signalled(build(), sys.argv[1]))
