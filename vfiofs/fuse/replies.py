"""Reply bodies, one small function per reply kind. The header is `FuseConnection`'s
business; IOCTL replies are packed whole by `FuseConnection.reply_ioctl`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ..abi import fuse_kernel as k

_ATTR = k.FuseAttr.STRUCT
_ENTRY_HEAD = k.FuseEntryOutHead.STRUCT
_ATTR_HEAD = k.FuseAttrOutHead.STRUCT
_DIRENT = k.FuseDirent.STRUCT


class Attr(NamedTuple):
    """What a node reports to stat(2)."""

    ino: int
    size: int
    mode: int
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    blocks: int = 0
    atime: int = 0
    mtime: int = 0
    ctime: int = 0
    rdev: int = 0
    blksize: int = 4096


def fuse_attr(a: Attr) -> bytes:
    """``struct fuse_attr``."""
    return _ATTR.pack(
        a.ino,
        a.size,
        a.blocks,
        a.atime,
        a.mtime,
        a.ctime,
        0,
        0,
        0,
        a.mode,
        a.nlink,
        a.uid,
        a.gid,
        a.rdev,
        a.blksize,
        0,
    )


def entry_out(
    nodeid: int, attr: Attr, entry_valid: int, attr_valid: int, generation: int = 0
) -> bytes:
    """``struct fuse_entry_out`` (LOOKUP)."""
    return _ENTRY_HEAD.pack(
        nodeid, generation, entry_valid, attr_valid, 0, 0
    ) + fuse_attr(attr)


def attr_out(attr: Attr, valid: int) -> bytes:
    """``struct fuse_attr_out`` (GETATTR, SETATTR)."""
    return _ATTR_HEAD.pack(valid, 0, 0) + fuse_attr(attr)


def open_out(fh: int, open_flags: int) -> bytes:
    """``struct fuse_open_out`` (OPEN, OPENDIR)."""
    return k.FuseOpenOut(fh, open_flags, 0).pack()


def write_out(size: int) -> bytes:
    """``struct fuse_write_out``."""
    return k.FuseWriteOut(size, 0).pack()


def statfs_out(
    *,
    bsize: int = 4096,
    namelen: int = 255,
    frsize: int = 4096,
    blocks: int = 0,
    files: int = 0,
) -> bytes:
    """``struct fuse_statfs_out``."""
    return k.FuseKstatfs(
        blocks, 0, 0, files, 0, bsize, namelen, frsize, 0, bytes(24)
    ).pack()


def poll_out(revents: int) -> bytes:
    """``struct fuse_poll_out``."""
    return k.FusePollOut(revents, 0).pack()


def getxattr_size(size: int) -> bytes:
    """``struct fuse_getxattr_out``: the size a GETXATTR/LISTXATTR with size 0 asks for."""
    return k.FuseGetxattrOut(size, 0).pack()


def dirent(ino: int, off: int, mode: int, name: bytes) -> bytes:
    """One ``struct fuse_dirent`` record with its name, padded to 8 bytes."""
    rec = _DIRENT.pack(ino, off, len(name), (mode >> 12) & 0xF) + name
    return rec + b"\0" * (-len(rec) % 8)


def dirents(entries: Sequence[tuple[int, str, int]], offset: int, size: int) -> bytes:
    """Pack ``(ino, name, mode)`` entries from index ``offset`` until ``size`` bytes are
    full. Each record's ``off`` is the index of the next entry (what READDIR resumes at)."""
    out = bytearray()
    for i in range(offset, len(entries)):
        ino, name, mode = entries[i]
        rec = dirent(ino, i + 1, mode, name.encode(errors="surrogateescape"))
        if len(out) + len(rec) > size:
            break
        out += rec
    return bytes(out)
