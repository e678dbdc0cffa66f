"""The inode and open-file tables (no mount)."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from vfiofs.errors import KernelError
from vfiofs.fs.node import Attribute, DeviceNode, Directory, Symlink, text
from vfiofs.fs.tree import FUSE_ROOT_ID, Tree
from vfiofs.uaccess import FakeCaller


class File:
    released = 0

    def release(self) -> None:
        File.released += 1


def make_tree() -> Tree:
    root = Directory()
    d = root.mkdir("a")
    d.add("ro", Attribute(show=text("0x1")))
    d.add("wo", Attribute(mode=stat.S_IFREG | 0o200, store=lambda b: None))
    d.add("dev", DeviceNode(opener=lambda caller, flags: File()))
    root.add("l", Symlink(target="a/ro"))
    return Tree(root)


def test_tree_lookup_assigns_stable_nodeids() -> None:
    t = make_tree()
    a1, _ = t.lookup(FUSE_ROOT_ID, "a")
    a2, _ = t.lookup(FUSE_ROOT_ID, "a")
    assert a1 == a2 != FUSE_ROOT_ID
    ro, node = t.lookup(a1, "ro")
    assert t.path(ro) == "/a/ro" and isinstance(node, Attribute)
    t.forget(ro, 1)  # still in the tree: the id stays
    assert t.lookup(a1, "ro")[0] == ro


def test_tree_lookup_missing_and_not_a_directory() -> None:
    t = make_tree()
    with pytest.raises(KernelError) as e:
        t.lookup(FUSE_ROOT_ID, "nope")
    assert e.value.errno == errno.ENOENT
    lid, _ = t.lookup(FUSE_ROOT_ID, "l")
    with pytest.raises(KernelError) as e:
        t.lookup(lid, "x")
    assert e.value.errno == errno.ENOTDIR


def test_tree_unlinked_node_forgotten_after_last_forget() -> None:
    t = make_tree()
    a, adir = t.lookup(FUSE_ROOT_ID, "a")
    dev, _ = t.lookup(a, "dev")
    t.lookup(a, "dev")
    assert isinstance(adir, Directory)
    adir.remove("dev")
    t.forget(dev, 1)
    assert t.node(dev) is not None  # one lookup left
    t.forget(dev, 1)
    with pytest.raises(KernelError) as e:
        t.node(dev)
    assert e.value.errno == errno.ENOENT


def test_tree_open_attribute_access_modes_like_kernfs() -> None:
    t = make_tree()
    a, _ = t.lookup(FUSE_ROOT_ID, "a")
    ro, _ = t.lookup(a, "ro")
    wo, _ = t.lookup(a, "wo")
    caller = FakeCaller()
    h = t.open(caller, ro, os.O_RDONLY)
    assert h.file.read(caller, 0, 100) == b"0x1\n"  # type: ignore[union-attr]
    for nodeid, flags in ((ro, os.O_WRONLY), (ro, os.O_RDWR), (wo, os.O_RDONLY)):
        with pytest.raises(KernelError) as e:
            t.open(caller, nodeid, flags)
        assert e.value.errno == errno.EACCES


def test_tree_open_device_and_release() -> None:
    t = make_tree()
    a, _ = t.lookup(FUSE_ROOT_ID, "a")
    dev, _ = t.lookup(a, "dev")
    h1 = t.open(FakeCaller(), dev, os.O_RDWR)
    h2 = t.open(FakeCaller(), dev, os.O_RDWR)
    assert h1.fh != h2.fh and t.handle(h1.fh) is h1
    assert t.release(h1.fh) is h1
    with pytest.raises(KernelError) as e:
        t.handle(h1.fh)
    assert e.value.errno == errno.EBADF
    with pytest.raises(KernelError) as e:
        t.open(FakeCaller(), a, os.O_RDONLY)
    assert e.value.errno == errno.EISDIR


def test_tree_attr_nlink_counts_subdirectories() -> None:
    t = make_tree()
    assert t.attr(FUSE_ROOT_ID, t.root)["nlink"] == 3
    lid, link = t.lookup(FUSE_ROOT_ID, "l")
    assert t.attr(lid, link)["size"] == len("a/ro")
