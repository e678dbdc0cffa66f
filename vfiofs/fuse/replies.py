"""Reply bodies, one small function per reply kind, and `decode_reply` for tests and for
playing the kernel's side in integration tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from ..abi import fuse_kernel as k
from ..abi.fuse_kernel import FuseOpcode as Op

_ATTR = k.FuseAttr.STRUCT  # type: ignore[attr-defined]
_ENTRY_HEAD = k.FuseEntryOutHead.STRUCT  # type: ignore[attr-defined]
_ATTR_HEAD = k.FuseAttrOutHead.STRUCT  # type: ignore[attr-defined]
_IOCTL_OUT = k.FuseIoctlOut.STRUCT  # type: ignore[attr-defined]
_DIRENT = k.FuseDirent.STRUCT  # type: ignore[attr-defined]


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
    return k.FuseOpenOut(fh, open_flags, 0).pack()  # type: ignore[attr-defined, no-any-return]


def write_out(size: int) -> bytes:
    """``struct fuse_write_out``."""
    return k.FuseWriteOut(size, 0).pack()  # type: ignore[attr-defined, no-any-return]


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
    ).pack()  # type: ignore[attr-defined, no-any-return]


def ioctl_out(result: int) -> bytes:
    """``struct fuse_ioctl_out``: ``result`` is the ioctl's return value."""
    return _IOCTL_OUT.pack(result, 0, 0, 0)


def poll_out(revents: int) -> bytes:
    """``struct fuse_poll_out``."""
    return k.FusePollOut(revents, 0).pack()  # type: ignore[attr-defined, no-any-return]


def getxattr_size(size: int) -> bytes:
    """``struct fuse_getxattr_out``: the size a GETXATTR/LISTXATTR with size 0 asks for."""
    return k.FuseGetxattrOut(size, 0).pack()  # type: ignore[attr-defined, no-any-return]


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


def parse_dirents(buf: bytes) -> list[tuple[int, int, int, bytes]]:
    """``(ino, off, type, name)`` records of a READDIR reply (for tests)."""
    out = []
    pos = 0
    while pos + _DIRENT.size <= len(buf):
        ino, off, namelen, typ = _DIRENT.unpack_from(buf, pos)
        name = buf[pos + _DIRENT.size : pos + _DIRENT.size + namelen]
        out.append((ino, off, typ, bytes(name)))
        pos += (_DIRENT.size + namelen + 7) & ~7
    return out


_REPLY_BODY: dict[int, Any] = {
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
    READ, READLINK, READDIR and error replies."""
    hdr = k.FuseOutHeader.unpack_from(buf)  # type: ignore[attr-defined]
    body = buf[16 : hdr.len]
    layout = _REPLY_BODY.get(opcode)
    if hdr.error or layout is None or not body:
        return hdr, bytes(body)
    parts = []
    pos = 0
    for st in layout:
        parts.append(st.unpack_from(body, pos))
        pos += st.SIZE
    return hdr, tuple(parts)
