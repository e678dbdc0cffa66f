"""Nodes of the tree and the operations an open device file offers.

A device file (``dev/vfio/vfio``, ``dev/vfio/7``, ``dev/iommu``, ...) is a `DeviceNode`
whose ``opener`` returns an `OpenFile`: the unit of state, like the kernel's ``struct
file``. Its methods mirror ``struct file_operations``; a missing one gets the kernel's
default errno (ioctl ENOTTY, read/write EINVAL). The dispatcher looks them up by name on
every request, which is faster than an ``isinstance`` against a runtime Protocol, so
`OpenFile` states the contract. Open files are core objects (a container, a group, a
device fd); this module only says what shape they have.

Device files are ``S_IFREG``: an ``S_IFCHR`` node on FUSE sends ``open()`` to the kernel's
own driver for that rdev, not to us (docs/internals.md).
"""

from __future__ import annotations

import errno
import stat
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import attrs

from ..abi.poll import POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM
from ..errors import KernelError
from ..uaccess import Caller

DEFAULT_POLLMASK = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM


@runtime_checkable
class OpenFile(Protocol):
    """An open handle. Only ``release`` is required; the dispatcher calls these when
    the object has them:

    - ``read(caller, offset, size) -> bytes``: pread. May raise KernelError or
      WouldBlock.
    - ``write(caller, offset, data) -> int``: pwrite; the bytes written. May raise
      KernelError or WouldBlock.
    - ``ioctl(caller, cmd, arg) -> int``: the syscall's return value. Raises
      KernelError, NeedFds (before changing any state) or WouldBlock.
    - ``poll(caller) -> (events, WaitQueue | None)``: ready events now, and a queue
      woken when they may change.
    - ``ioctl_name(cmd) -> str | None``: the kernel name of ``cmd``, for ``--trace``.
    - ``nonseekable`` (an attribute, True): opened with ``nonseekable_open``, a stream
      read and written at no offset (iommufd's event queues); OPEN then replies
      FOPEN_STREAM | FOPEN_NONSEEKABLE.
    """

    def release(self) -> None:
        """The last close of this handle: tear down what it owns. Must not raise."""
        ...


Opener = Callable[[Caller, int], OpenFile]
"""``opener(caller, open_flags) -> OpenFile``; raises KernelError to refuse."""


@attrs.define(eq=False)
class Node:
    """Something in the tree. ``mode`` includes the file type bits."""

    mode: int
    uid: int = 0
    gid: int = 0
    # set when the node leaves the tree (hot-unplug); its inode number then dies with
    # the last FORGET instead of living as long as the mount
    unlinked: bool = attrs.field(default=False, kw_only=True)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def size(self) -> int:
        """``st_size``."""
        return 0


@attrs.define(eq=False)
class Directory(Node):
    """A directory; ``children`` may change while mounted (hotplug)."""

    mode: int = stat.S_IFDIR | 0o755
    children: dict[str, Node] = attrs.Factory(dict)

    def add(self, name: str, node: Node) -> Node:
        """Add (or replace) a child; returns it."""
        self.children[name] = node
        return node

    def remove(self, name: str) -> None:
        """Take a child (and everything below it) out of the tree."""
        node = self.children.pop(name, None)
        stack = [node] if node is not None else []
        while stack:
            n = stack.pop()
            n.unlinked = True
            if isinstance(n, Directory):
                stack.extend(n.children.values())

    def mkdir(self, name: str, mode: int = 0o755) -> Directory:
        """The child directory ``name``, created if missing."""
        node = self.children.get(name)
        if isinstance(node, Directory):
            return node
        d = Directory(mode=stat.S_IFDIR | mode)
        self.children[name] = d
        return d

    def walk(self, path: str) -> Node:
        """The node at a relative ``a/b/c`` path. Raises KernelError(ENOENT)."""
        node: Node = self
        for part in path.strip("/").split("/"):
            if not part:
                continue
            if not isinstance(node, Directory) or part not in node.children:
                raise KernelError(errno.ENOENT, path)
            node = node.children[part]
        return node


@attrs.define(eq=False)
class Symlink(Node):
    """A symbolic link (sysfs links are relative)."""

    target: str = ""
    mode: int = stat.S_IFLNK | 0o777

    def size(self) -> int:
        return len(self.target.encode())


@attrs.define(eq=False)
class Attribute(Node):
    """A sysfs attribute. ``show`` renders the whole content on open (sysfs reads a
    snapshot per open); ``store`` takes what was written, raising KernelError to refuse.
    Text attributes report ``st_size`` 4096 like sysfs; binary ones give ``bin_size``.
    """

    show: Callable[[], bytes] | None = None
    store: Callable[[bytes], None] | None = None
    mode: int = stat.S_IFREG | 0o444
    bin_size: int | None = None
    # binary attributes (``config``) read and write at offsets instead of a snapshot
    read_at: Callable[[int, int], bytes] | None = None
    write_at: Callable[[int, bytes], int] | None = None

    def size(self) -> int:
        return 4096 if self.bin_size is None else self.bin_size


@attrs.define(eq=False)
class DeviceNode(Node):
    """A device file served as S_IFREG; every open goes to ``opener``."""

    opener: Opener | None = None
    mode: int = stat.S_IFREG | 0o600


def text(value: str | int | Callable[[], str]) -> Callable[[], bytes]:
    """A ``show`` for a text attribute: the value and exactly one newline."""
    if callable(value):
        fn = value
        return lambda: (fn() + "\n").encode()
    data = f"{value}\n".encode()
    return lambda: data
