"""The one FUSE opcode table (go-fuse's ``operationHandlers``): opcode -> `OpSpec`.

It drives decoding (`FuseConnection.receive` reads the fixed struct, the trailing name and
the data tail it names), dispatch (``session.dispatch.Dispatcher`` serves each entry with
its ``op_<name>`` method and sends nothing back where ``reply`` is False) and ``--trace``
(`describe`). An opcode missing here is answered ENOSYS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from ..abi import fuse_kernel as k
from ..abi._cstruct import CTuple
from ..abi.fuse_kernel import FuseOpcode as Op
from . import requests as rq


class OpSpec(NamedTuple):
    """What one opcode carries and how it is answered.

    Attributes:
        name: the C name without ``FUSE_``; the dispatcher's method is ``op_<name>``.
        cls: the request class `FuseConnection.receive` builds.
        arg: the fixed struct after the header, or None.
        names: trailing NUL-terminated names (the first goes to ``name``).
        rest: what follows the struct is ``data``, as many bytes as the ``arg`` field
            named here says, times the unit (WRITE's payload, IOCTL's in_size bytes,
            BATCH_FORGET's entries). A shorter message is malformed.
        reply: False for FORGET, BATCH_FORGET and INTERRUPT: the kernel waits for no
            answer, so not even an error is sent.
        trace: the ``arg`` fields `describe` shows: ``field``, ``label=field``, with an
            optional ``:format`` (``cmd:#x``).
    """

    name: str
    cls: type[rq.Request[Any]]
    arg: type[CTuple] | None = None
    names: int = 0
    rest: tuple[str, int] | None = None
    reply: bool = True
    trace: tuple[str, ...] = ()


_IO: Final = ("off=offset", "size")

OPCODES: Final[Mapping[int, OpSpec]] = {
    Op.FUSE_LOOKUP: OpSpec("LOOKUP", rq.Lookup, names=1),
    Op.FUSE_FORGET: OpSpec("FORGET", rq.Forget, k.FuseForgetIn, reply=False),
    Op.FUSE_GETATTR: OpSpec("GETATTR", rq.Getattr, k.FuseGetattrIn),
    Op.FUSE_SETATTR: OpSpec("SETATTR", rq.Setattr, k.FuseSetattrIn),
    Op.FUSE_READLINK: OpSpec("READLINK", rq.Readlink),
    Op.FUSE_OPEN: OpSpec("OPEN", rq.Open, k.FuseOpenIn, trace=("flags:#o",)),
    Op.FUSE_READ: OpSpec("READ", rq.Read, k.FuseReadIn, trace=("fh", *_IO)),
    Op.FUSE_WRITE: OpSpec(
        "WRITE", rq.Write, k.FuseWriteIn, rest=("size", 1), trace=("fh", *_IO)
    ),
    Op.FUSE_STATFS: OpSpec("STATFS", rq.Statfs),
    Op.FUSE_RELEASE: OpSpec("RELEASE", rq.Release, k.FuseReleaseIn, trace=("fh",)),
    Op.FUSE_FSYNC: OpSpec("FSYNC", rq.Fsync, k.FuseFsyncIn),
    Op.FUSE_GETXATTR: OpSpec("GETXATTR", rq.Getxattr, k.FuseGetxattrIn, names=1),
    Op.FUSE_LISTXATTR: OpSpec("LISTXATTR", rq.Listxattr, k.FuseGetxattrIn),
    Op.FUSE_FLUSH: OpSpec("FLUSH", rq.Flush, k.FuseFlushIn, trace=("fh",)),
    Op.FUSE_INIT: OpSpec("INIT", rq.Init, k.FuseInitIn),
    Op.FUSE_OPENDIR: OpSpec("OPENDIR", rq.Opendir, k.FuseOpenIn, trace=("flags:#o",)),
    Op.FUSE_READDIR: OpSpec("READDIR", rq.Readdir, k.FuseReadIn, trace=("fh", *_IO)),
    Op.FUSE_RELEASEDIR: OpSpec(
        "RELEASEDIR", rq.Releasedir, k.FuseReleaseIn, trace=("fh",)
    ),
    Op.FUSE_FSYNCDIR: OpSpec("FSYNCDIR", rq.Fsyncdir, k.FuseFsyncIn),
    Op.FUSE_ACCESS: OpSpec("ACCESS", rq.Access, k.FuseAccessIn),
    Op.FUSE_INTERRUPT: OpSpec(
        "INTERRUPT", rq.Interrupt, k.FuseInterruptIn, reply=False, trace=("unique",)
    ),
    Op.FUSE_DESTROY: OpSpec("DESTROY", rq.Destroy),
    Op.FUSE_IOCTL: OpSpec(
        "IOCTL",
        rq.Ioctl,
        k.FuseIoctlIn,
        rest=("in_size", 1),
        trace=("fh", "cmd:#x", "arg:#x"),
    ),
    Op.FUSE_POLL: OpSpec("POLL", rq.Poll, k.FusePollIn, trace=("fh", "events:#x")),
    Op.FUSE_BATCH_FORGET: OpSpec(
        "BATCH_FORGET",
        rq.BatchForget,
        k.FuseBatchForgetIn,
        rest=("count", k.FuseForgetOne.SIZE),
        reply=False,
    ),
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


def _field(item: str) -> tuple[str, str, str]:
    """``"label=field:fmt"`` -> (label, field, fmt)."""
    item, _, fmt = item.partition(":")
    label, _, field = item.rpartition("=")
    return label or field, field, fmt


def describe(req: rq.Request[Any]) -> str:
    """A short strace-like rendering of a request, for ``--trace``."""
    spec = OPCODES.get(req.header.opcode)
    if spec is None:
        return opname(req.header.opcode)
    parts = [spec.name]
    if spec.arg is not None and isinstance(req.arg, spec.arg):
        for item in spec.trace:
            label, field, fmt = _field(item)
            parts.append(f"{label}={getattr(req.arg, field):{fmt}}")
    if spec.names and not isinstance(req, rq.BadRequest):
        parts.append(repr(req.name.decode(errors="replace")))
    return " ".join(parts)
