"""A small filesystem for testing the FUSE server itself (not VFIO): run as
``python tests/mount/echofs.py MOUNTPOINT``. It uses the real session and tree with test
device files whose handlers exercise each server path: caller memory, fds inside ioctl
arguments, poll wake-ups and requests that block until woken or interrupted.
"""

from __future__ import annotations

import errno
import logging
import stat
import sys

import attrs
import trio

from vfiofs.abi.ioctl import _IO
from vfiofs.errors import KernelError
from vfiofs.fs.node import (
    POLLIN,
    POLLOUT,
    Attribute,
    DeviceNode,
    Directory,
    Symlink,
    text,
)
from vfiofs.fs.tree import Tree
from vfiofs.session.serve import serve_until_signalled
from vfiofs.uaccess import Caller, ForeignFile, OurFile
from vfiofs.waitqueue import WaitQueue, WouldBlock

ECHO_NOOP = _IO(ord("E"), 0)  # returns 0
ECHO_STRUCT = _IO(
    ord("E"), 1
)  # reads 64 bytes at arg, writes each byte + 1, returns 42
ECHO_FD = _IO(
    ord("E"), 2
)  # int* fd -> serial of our handle, or 1000 after signalling an eventfd
ECHO_WAIT = _IO(ord("E"), 3)  # blocks until something is written to the file
ECHO_SERIAL = _IO(ord("E"), 4)  # this handle's serial


@attrs.define(eq=False)
class Shared:
    queue: WaitQueue = attrs.Factory(WaitQueue)
    data: bytearray = attrs.Factory(bytearray)
    serials: int = 0
    opens: int = 0
    releases: int = 0


@attrs.define(eq=False)
class EchoFile:
    shared: Shared
    serial: int

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        if not self.shared.data:
            raise WouldBlock(self.shared.queue)
        out = bytes(self.shared.data[:size])
        del self.shared.data[:size]
        return out

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        self.shared.data += data
        self.shared.queue.wake()
        return len(data)

    def poll(self, caller: Caller) -> tuple[int, WaitQueue]:
        return (POLLOUT | (POLLIN if self.shared.data else 0)), self.shared.queue

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        if cmd == ECHO_NOOP:
            return 0
        if cmd == ECHO_STRUCT:
            data = caller.copy_from_user(arg, 64)
            caller.copy_to_user(arg, bytes((b + 1) & 0xFF for b in data))
            return 42
        if cmd == ECHO_FD:
            fd = int.from_bytes(caller.copy_from_user(arg, 4), "little", signed=True)
            ref = caller.fget(fd)
            if isinstance(ref, OurFile) and isinstance(ref.handle, EchoFile):
                return ref.handle.serial
            if isinstance(ref, ForeignFile) and ref.kind == "eventfd":
                ev = ref.take_eventfd()
                ev.signal()
                ev.close()
                return 1000
            raise KernelError(errno.EBADFD, "not an echo file")
        if cmd == ECHO_WAIT:
            if not self.shared.data:
                raise WouldBlock(self.shared.queue)
            return len(self.shared.data)
        if cmd == ECHO_SERIAL:
            return self.serial
        raise KernelError(errno.ENOTTY)

    def release(self) -> None:
        self.shared.releases += 1


def build() -> Tree:
    shared = Shared()

    def open_echo(caller: Caller, flags: int) -> EchoFile:
        shared.serials += 1
        shared.opens += 1
        return EchoFile(shared, shared.serials)

    root = Directory()
    dev = root.mkdir("dev")
    dev.add("echo", DeviceNode(mode=stat.S_IFREG | 0o666, opener=open_echo))
    dev.add("private", DeviceNode(mode=stat.S_IFREG | 0o600, opener=open_echo))
    attrs_dir = root.mkdir("attrs")
    attrs_dir.add("ro", Attribute(show=text("0x1234")))
    value = {"v": b"initial\n"}
    attrs_dir.add(
        "rw",
        Attribute(
            mode=stat.S_IFREG | 0o644,
            show=lambda: value["v"],
            store=lambda b: value.update(v=b),
        ),
    )
    attrs_dir.add(
        "opens", Attribute(show=lambda: f"{shared.opens} {shared.releases}\n".encode())
    )
    root.add("link", Symlink(target="attrs/ro"))
    return Tree(root)


async def main(mountpoint: str) -> None:
    await serve_until_signalled(
        build(), mountpoint, trace=sys.stderr if "--trace" in sys.argv else None
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    trio.run(main, sys.argv[1])
