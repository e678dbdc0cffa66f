"""One class per FUSE opcode, all shaped alike: ``header``, ``arg`` (the opcode's fixed
struct, or None), ``name`` (the first trailing NUL-terminated name, without its NUL) and
``data`` (what follows: WRITE's payload, BATCH_FORGET's entries, a second name).

They are `NamedTuple` subclasses: a request is built with one ``tuple.__new__`` per read,
which matters on a path that runs for every ioctl.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..abi.fuse_kernel import FuseForgetOne, FuseInHeader


class Request(NamedTuple):
    header: FuseInHeader
    arg: Any = None
    name: bytes = b""
    data: bytes = b""

    @property
    def unique(self) -> int:
        return self.header.unique

    @property
    def nodeid(self) -> int:
        return self.header.nodeid

    @property
    def opcode(self) -> int:
        return self.header.opcode

    @property
    def fh(self) -> int:
        """The file handle, for opcodes whose struct has one."""
        return int(self.arg.fh)


class Init(Request):
    __slots__ = ()


class Destroy(Request):
    __slots__ = ()


class Lookup(Request):
    __slots__ = ()


class Forget(Request):
    __slots__ = ()


class BatchForget(Request):
    __slots__ = ()

    @property
    def forgets(self) -> list[FuseForgetOne]:
        size = FuseForgetOne.SIZE  # type: ignore[attr-defined]
        return [
            FuseForgetOne.unpack_from(self.data, i * size)  # type: ignore[attr-defined]
            for i in range(min(self.arg.count, len(self.data) // size))
        ]


class Getattr(Request):
    __slots__ = ()


class Setattr(Request):
    __slots__ = ()


class Readlink(Request):
    __slots__ = ()


class Open(Request):
    __slots__ = ()


class Read(Request):
    __slots__ = ()


class Write(Request):
    __slots__ = ()


class Statfs(Request):
    __slots__ = ()


class Release(Request):
    __slots__ = ()


class Fsync(Request):
    __slots__ = ()


class Getxattr(Request):
    __slots__ = ()


class Listxattr(Request):
    __slots__ = ()


class Flush(Request):
    __slots__ = ()


class Opendir(Request):
    __slots__ = ()


class Readdir(Request):
    __slots__ = ()


class Releasedir(Request):
    __slots__ = ()


class Fsyncdir(Request):
    __slots__ = ()


class Access(Request):
    __slots__ = ()


class Interrupt(Request):
    __slots__ = ()


class Ioctl(Request):
    __slots__ = ()


class Poll(Request):
    __slots__ = ()


class Readdirplus(Request):
    __slots__ = ()


class Unknown(Request):
    """An opcode vfiofs does not implement: the answer is ENOSYS."""

    __slots__ = ()


class BadRequest(Request):
    """The header parsed but the body did not: the answer is EIO. ``name`` holds why."""

    __slots__ = ()

    @property
    def reason(self) -> str:
        return self.name.decode()
