"""One class per FUSE opcode, all shaped alike: ``header``, ``arg`` (the opcode's fixed
struct, or None), ``name`` (the first trailing NUL-terminated name, without its NUL) and
``data`` (what follows: WRITE's payload, BATCH_FORGET's entries, a second name).

They are `NamedTuple` subclasses: a request is built with one ``tuple.__new__`` per read,
which matters on a path that runs for every ioctl. ``Request[A]`` types ``arg``; which
struct each opcode carries is `_opcodes.OPCODES`'s business (a test checks they agree).
"""

from __future__ import annotations

from typing import Generic, NamedTuple, TypeVar

from ..abi import fuse_kernel as k
from ..abi.fuse_kernel import FuseForgetOne, FuseInHeader

A = TypeVar("A", covariant=True)


class Request(NamedTuple, Generic[A]):
    header: FuseInHeader
    arg: A
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


class Init(Request[k.FuseInitIn]):
    __slots__ = ()


class Destroy(Request[None]):
    __slots__ = ()


class Lookup(Request[None]):
    __slots__ = ()


class Forget(Request[k.FuseForgetIn]):
    __slots__ = ()


class BatchForget(Request[k.FuseBatchForgetIn]):
    __slots__ = ()

    @property
    def forgets(self) -> list[FuseForgetOne]:
        size = FuseForgetOne.SIZE
        return [
            FuseForgetOne.unpack_from(self.data, i * size)
            for i in range(min(self.arg.count, len(self.data) // size))
        ]


class Getattr(Request[k.FuseGetattrIn]):
    __slots__ = ()


class Setattr(Request[k.FuseSetattrIn]):
    __slots__ = ()


class Readlink(Request[None]):
    __slots__ = ()


class Open(Request[k.FuseOpenIn]):
    __slots__ = ()


class Read(Request[k.FuseReadIn]):
    __slots__ = ()


class Write(Request[k.FuseWriteIn]):
    __slots__ = ()


class Statfs(Request[None]):
    __slots__ = ()


class Release(Request[k.FuseReleaseIn]):
    __slots__ = ()


class Fsync(Request[k.FuseFsyncIn]):
    __slots__ = ()


class Getxattr(Request[k.FuseGetxattrIn]):
    __slots__ = ()


class Listxattr(Request[k.FuseGetxattrIn]):
    __slots__ = ()


class Flush(Request[k.FuseFlushIn]):
    __slots__ = ()


class Opendir(Request[k.FuseOpenIn]):
    __slots__ = ()


class Readdir(Request[k.FuseReadIn]):
    __slots__ = ()


class Releasedir(Request[k.FuseReleaseIn]):
    __slots__ = ()


class Fsyncdir(Request[k.FuseFsyncIn]):
    __slots__ = ()


class Access(Request[k.FuseAccessIn]):
    __slots__ = ()


class Interrupt(Request[k.FuseInterruptIn]):
    __slots__ = ()


class Ioctl(Request[k.FuseIoctlIn]):
    __slots__ = ()


class Poll(Request[k.FusePollIn]):
    __slots__ = ()


class Unknown(Request[None]):
    """An opcode vfiofs does not implement: the answer is ENOSYS."""

    __slots__ = ()


class BadRequest(Request[None]):
    """The header parsed but the body did not: the answer is EIO. ``name`` holds why."""

    __slots__ = ()

    @property
    def reason(self) -> str:
        return self.name.decode()
