"""The inode table and the open-file table of one mount.

FUSE names nodes by a 64-bit nodeid and open files by a 64-bit fh. `Tree` hands out both:
a node keeps its nodeid for the life of the mount (as long as it is in the tree), lookup
counts are kept as FUSE requires, and a nodeid is forgotten only when the kernel has
forgotten it *and* the node has left the tree. Open handles are `Handle` objects: the node,
the open flags and the object that serves the calls (an `OpenFile`).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator

import attrs

from ..errors import KernelError
from ..uaccess import Caller
from .node import Attribute, DeviceNode, Directory, Node, OpenFile

FUSE_ROOT_ID = 1


@attrs.define(eq=False)
class AttributeFile:
    """An open sysfs attribute: text attributes read a snapshot taken at open, as sysfs
    does; binary ones (``config``) read and write at offsets."""

    node: Attribute
    snapshot: bytes | None = None

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        node = self.node
        if node.read_at is not None:
            return node.read_at(offset, size)
        if self.snapshot is None:
            if node.show is None:
                raise KernelError(errno.EIO, "write-only attribute")
            self.snapshot = node.show()
        return self.snapshot[offset : offset + size]

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        node = self.node
        if node.write_at is not None:
            return node.write_at(offset, data)
        if node.store is None:
            raise KernelError(errno.EIO, "read-only attribute")
        node.store(data)
        return len(data)

    def release(self) -> None:
        self.snapshot = None


@attrs.define(eq=False)
class Handle:
    """One open file: FUSE's fh."""

    fh: int
    nodeid: int
    node: Node
    flags: int
    file: OpenFile | None  # None for directories
    entries: list[tuple[str, Node]] | None = None  # directory snapshot for READDIR


@attrs.define(eq=False)
class Tree:
    """Nodeids, lookup counts and open handles over a `Directory` root."""

    root: Directory = attrs.Factory(Directory)
    mount_time: float = attrs.Factory(time.time)
    _ids: dict[Node, int] = attrs.Factory(dict)
    _nodes: dict[int, Node] = attrs.Factory(dict)
    _paths: dict[int, str] = attrs.Factory(dict)
    _nlookup: dict[int, int] = attrs.Factory(dict)
    _next_id: int = FUSE_ROOT_ID + 1
    handles: dict[int, Handle] = attrs.Factory(dict)
    _next_fh: int = 1

    def __attrs_post_init__(self) -> None:
        self._ids[self.root] = FUSE_ROOT_ID
        self._nodes[FUSE_ROOT_ID] = self.root
        self._paths[FUSE_ROOT_ID] = ""

    # --- nodes -----------------------------------------------------------------------

    def node(self, nodeid: int) -> Node:
        """The node behind ``nodeid``. Raises KernelError(ENOENT) for a stale one."""
        try:
            return self._nodes[nodeid]
        except KeyError:
            raise KernelError(errno.ENOENT, f"stale nodeid {nodeid}") from None

    def path(self, nodeid: int) -> str:
        """The path of ``nodeid`` relative to the mount, for traces and logs."""
        return self._paths.get(nodeid, f"<node {nodeid}>")

    def lookup(self, parent: int, name: str) -> tuple[int, Node]:
        """LOOKUP: the child's nodeid (counted once more) and node."""
        pnode = self.node(parent)
        if not isinstance(pnode, Directory):
            raise KernelError(errno.ENOTDIR)
        child = pnode.children.get(name)
        if child is None:
            raise KernelError(errno.ENOENT)
        nodeid = self.remember(child, f"{self._paths.get(parent, '')}/{name}")
        self._nlookup[nodeid] = self._nlookup.get(nodeid, 0) + 1
        return nodeid, child

    def remember(self, node: Node, path: str) -> int:
        """The nodeid of ``node``, assigned on first sight (not counted)."""
        nodeid = self._ids.get(node)
        if nodeid is None:
            nodeid = self._next_id
            self._next_id += 1
            self._ids[node] = nodeid
            self._nodes[nodeid] = node
            self._paths[nodeid] = path
        return nodeid

    def forget(self, nodeid: int, nlookup: int) -> None:
        """FORGET: drop ``nlookup`` references; an unlinked node then disappears."""
        left = self._nlookup.get(nodeid, 0) - nlookup
        if left > 0:
            self._nlookup[nodeid] = left
            return
        self._nlookup.pop(nodeid, None)
        node = self._nodes.get(nodeid)
        if node is not None and node.unlinked and nodeid != FUSE_ROOT_ID:
            del self._nodes[nodeid]
            del self._ids[node]
            self._paths.pop(nodeid, None)

    def attr(self, nodeid: int, node: Node) -> dict[str, int]:
        """The stat fields of a node."""
        nlink = 1
        if isinstance(node, Directory):
            nlink = 2 + sum(
                1 for c in node.children.values() if isinstance(c, Directory)
            )
        return {
            "ino": nodeid,
            "size": node.size(),
            "mode": node.mode,
            "nlink": nlink,
            "uid": node.uid,
            "gid": node.gid,
        }

    # --- open files --------------------------------------------------------------------

    def open(self, caller: Caller, nodeid: int, flags: int) -> Handle:
        """OPEN: an `OpenFile` from the node's opener (device) or an attribute file."""
        node = self.node(nodeid)
        if isinstance(node, DeviceNode):
            if node.opener is None:
                raise KernelError(errno.ENODEV)
            file: OpenFile = node.opener(caller, flags)
        elif isinstance(node, Attribute):
            # kernfs_fop_open(): opening for an access the attribute has no method for
            # is EACCES, even for root
            acc = flags & os.O_ACCMODE
            if acc != os.O_RDONLY and node.store is None and node.write_at is None:
                raise KernelError(errno.EACCES, "attribute is read-only")
            if acc != os.O_WRONLY and node.show is None and node.read_at is None:
                raise KernelError(errno.EACCES, "attribute is write-only")
            file = AttributeFile(node)
        elif stat.S_ISDIR(node.mode):
            raise KernelError(errno.EISDIR)
        else:
            raise KernelError(errno.ENXIO)
        return self._add_handle(nodeid, node, flags, file)

    def opendir(self, nodeid: int, flags: int) -> Handle:
        """OPENDIR: snapshot the entries so a READDIR sequence is consistent."""
        node = self.node(nodeid)
        if not isinstance(node, Directory):
            raise KernelError(errno.ENOTDIR)
        h = self._add_handle(nodeid, node, flags, None)
        h.entries = list(node.children.items())
        return h

    def _add_handle(
        self, nodeid: int, node: Node, flags: int, file: OpenFile | None
    ) -> Handle:
        fh = self._next_fh
        self._next_fh += 1
        h = Handle(fh, nodeid, node, flags, file)
        self.handles[fh] = h
        return h

    def handle(self, fh: int) -> Handle:
        """The open handle ``fh``. Raises KernelError(EBADF)."""
        try:
            return self.handles[fh]
        except KeyError:
            raise KernelError(errno.EBADF, f"unknown fh {fh}") from None

    def release(self, fh: int) -> Handle | None:
        """RELEASE: forget the handle; the caller releases its file."""
        return self.handles.pop(fh, None)

    def release_all(self) -> Iterator[Handle]:
        """Every open handle, removed (unmount)."""
        while self.handles:
            _, h = self.handles.popitem()
            yield h
