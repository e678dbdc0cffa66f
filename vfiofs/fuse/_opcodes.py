"""The one table that drives parsing, dispatch names and traces (go-fuse's
``operationHandlers``): opcode -> `OpSpec`."""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from ..abi import fuse_kernel as k
from ..abi.fuse_kernel import FuseOpcode as Op
from . import requests as rq


class OpSpec(NamedTuple):
    name: str
    cls: type[rq.Request]
    arg: Any  # the fixed struct class, or None
    names: int  # trailing NUL-terminated names (the first goes to ``name``)
    rest: bool  # the bytes after the struct/names are ``data`` (WRITE, BATCH_FORGET)
    reply: bool  # FORGET, BATCH_FORGET and INTERRUPT get no reply


OPCODES: Final[dict[int, OpSpec]] = {
    Op.FUSE_LOOKUP: OpSpec("LOOKUP", rq.Lookup, None, 1, False, True),
    Op.FUSE_FORGET: OpSpec("FORGET", rq.Forget, k.FuseForgetIn, 0, False, False),
    Op.FUSE_GETATTR: OpSpec("GETATTR", rq.Getattr, k.FuseGetattrIn, 0, False, True),
    Op.FUSE_SETATTR: OpSpec("SETATTR", rq.Setattr, k.FuseSetattrIn, 0, False, True),
    Op.FUSE_READLINK: OpSpec("READLINK", rq.Readlink, None, 0, False, True),
    Op.FUSE_OPEN: OpSpec("OPEN", rq.Open, k.FuseOpenIn, 0, False, True),
    Op.FUSE_READ: OpSpec("READ", rq.Read, k.FuseReadIn, 0, False, True),
    Op.FUSE_WRITE: OpSpec("WRITE", rq.Write, k.FuseWriteIn, 0, True, True),
    Op.FUSE_STATFS: OpSpec("STATFS", rq.Statfs, None, 0, False, True),
    Op.FUSE_RELEASE: OpSpec("RELEASE", rq.Release, k.FuseReleaseIn, 0, False, True),
    Op.FUSE_FSYNC: OpSpec("FSYNC", rq.Fsync, k.FuseFsyncIn, 0, False, True),
    Op.FUSE_GETXATTR: OpSpec("GETXATTR", rq.Getxattr, k.FuseGetxattrIn, 1, False, True),
    Op.FUSE_LISTXATTR: OpSpec(
        "LISTXATTR", rq.Listxattr, k.FuseGetxattrIn, 0, False, True
    ),
    Op.FUSE_FLUSH: OpSpec("FLUSH", rq.Flush, k.FuseFlushIn, 0, False, True),
    Op.FUSE_INIT: OpSpec("INIT", rq.Init, k.FuseInitIn, 0, False, True),
    Op.FUSE_OPENDIR: OpSpec("OPENDIR", rq.Opendir, k.FuseOpenIn, 0, False, True),
    Op.FUSE_READDIR: OpSpec("READDIR", rq.Readdir, k.FuseReadIn, 0, False, True),
    Op.FUSE_RELEASEDIR: OpSpec(
        "RELEASEDIR", rq.Releasedir, k.FuseReleaseIn, 0, False, True
    ),
    Op.FUSE_FSYNCDIR: OpSpec("FSYNCDIR", rq.Fsyncdir, k.FuseFsyncIn, 0, False, True),
    Op.FUSE_ACCESS: OpSpec("ACCESS", rq.Access, k.FuseAccessIn, 0, False, True),
    Op.FUSE_INTERRUPT: OpSpec(
        "INTERRUPT", rq.Interrupt, k.FuseInterruptIn, 0, False, False
    ),
    Op.FUSE_DESTROY: OpSpec("DESTROY", rq.Destroy, None, 0, False, True),
    Op.FUSE_IOCTL: OpSpec("IOCTL", rq.Ioctl, k.FuseIoctlIn, 0, True, True),
    Op.FUSE_POLL: OpSpec("POLL", rq.Poll, k.FusePollIn, 0, False, True),
    Op.FUSE_BATCH_FORGET: OpSpec(
        "BATCH_FORGET", rq.BatchForget, k.FuseBatchForgetIn, 0, True, False
    ),
    Op.FUSE_READDIRPLUS: OpSpec(
        "READDIRPLUS", rq.Readdirplus, k.FuseReadIn, 0, False, True
    ),
}

SPEC_OF_CLASS: Final[dict[type, tuple[int, OpSpec]]] = {
    s.cls: (op, s) for op, s in OPCODES.items()
}


def opname(opcode: int) -> str:
    """The opcode's name (``FUSE_`` dropped) for logs."""
    spec = OPCODES.get(opcode)
    if spec is not None:
        return spec.name
    try:
        return Op(opcode).name.removeprefix("FUSE_")
    except ValueError:
        return f"OP{opcode}"


def describe(req: rq.Request) -> str:
    """A short strace-like rendering of a request, for ``--trace``."""
    name = opname(req.header.opcode)
    a = req.arg
    if isinstance(req, rq.Ioctl):
        return f"{name} fh={a.fh} cmd={a.cmd:#x} arg={a.arg:#x}"
    if isinstance(req, (rq.Read, rq.Readdir)):
        return f"{name} fh={a.fh} off={a.offset} size={a.size}"
    if isinstance(req, rq.Write):
        return f"{name} fh={a.fh} off={a.offset} size={a.size}"
    if isinstance(req, (rq.Open, rq.Opendir)):
        return f"{name} flags={a.flags:#o}"
    if isinstance(req, (rq.Release, rq.Releasedir, rq.Flush)):
        return f"{name} fh={a.fh}"
    if isinstance(req, rq.Poll):
        return f"{name} fh={a.fh} events={a.events:#x}"
    if isinstance(req, (rq.Lookup, rq.Getxattr)):
        return f"{name} {req.name.decode(errors='replace')!r}"
    return name
