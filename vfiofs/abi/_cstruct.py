"""`@cstruct`: C structs as frozen attrs classes backed by one `struct.Struct`.

Each field carries its `struct` format code in its metadata (`u32()`, `u64()`, ...). The
decorator compiles ``"<" + codes`` (x86-64 is little-endian; every pad is spelled out, so
there is no implicit padding) and adds ``SIZE``, ``unpack_from``, ``pack``, ``offsetof``
and ``offsetofend``. No validators: `struct.pack` range-checks, semantics live in handlers.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, ClassVar, Self, TypeVar, dataclass_transform

import attrs

_FMT = "cstruct_fmt"


def _field(code: str, default: object = 0) -> Any:
    return attrs.field(default=default, metadata={_FMT: code})


def u8(default: int = 0) -> Any:
    """An unsigned 8-bit field."""
    return _field("B", default)


def u16(default: int = 0) -> Any:
    """An unsigned 16-bit field."""
    return _field("H", default)


def u32(default: int = 0) -> Any:
    """An unsigned 32-bit field."""
    return _field("I", default)


def s32(default: int = 0) -> Any:
    """A signed 32-bit field."""
    return _field("i", default)


def u64(default: int = 0) -> Any:
    """An unsigned 64-bit field (also ``__aligned_u64`` and user pointers)."""
    return _field("Q", default)


def s64(default: int = 0) -> Any:
    """A signed 64-bit field."""
    return _field("q", default)


def pad(n: int) -> Any:
    """``n`` bytes of padding or reserved space, read and written as ``bytes``."""
    return _field(f"{n}s", bytes(n))


class CStruct:
    """Base of every `@cstruct` class: packing and unpacking through the one
    `struct.Struct` the decorator compiled from the fields."""

    __slots__ = ()
    SIZE: ClassVar[int]
    STRUCT: ClassVar[struct.Struct]
    FIELDS: ClassVar[tuple[str, ...]]
    OFFSETS: ClassVar[dict[str, int]]
    ENDS: ClassVar[dict[str, int]]

    def pack(self) -> bytes:
        """The C bytes of this struct."""
        return self.STRUCT.pack(*[getattr(self, n) for n in self.FIELDS])

    @classmethod
    def unpack_from(cls, buf: bytes | bytearray | memoryview, offset: int = 0) -> Self:
        """Decode ``SIZE`` bytes of ``buf`` at ``offset``."""
        return cls(*cls.STRUCT.unpack_from(buf, offset))

    @classmethod
    def offsetof(cls, name: str) -> int:
        """``offsetof(struct, name)``: where field ``name`` starts."""
        return cls.OFFSETS[name]

    @classmethod
    def offsetofend(cls, name: str) -> int:
        """``offsetofend(struct, name)``: where field ``name`` ends."""
        return cls.ENDS[name]


T = TypeVar("T", bound=CStruct)


@dataclass_transform(frozen_default=True, field_specifiers=(attrs.field,))
def cstruct(cls: type[T]) -> type[T]:
    """Turn a `CStruct` subclass of `u32()`-style fields into a frozen C struct."""
    acls: Any = attrs.frozen(cls)
    fields = attrs.fields(acls)
    codes = [f.metadata[_FMT] for f in fields]
    st = struct.Struct("<" + "".join(codes))
    offsets: dict[str, int] = {}
    ends: dict[str, int] = {}
    off = 0
    for f, code in zip(fields, codes, strict=True):
        offsets[f.name] = off
        off += struct.calcsize("<" + code)
        ends[f.name] = off
    acls.SIZE = st.size
    acls.STRUCT = st
    acls.FIELDS = tuple(f.name for f in fields)
    acls.OFFSETS = offsets
    acls.ENDS = ends
    return acls  # type: ignore[no-any-return]


NT = TypeVar("NT", bound=tuple[Any, ...])


def ctuple(fmt: str) -> Callable[[type[NT]], type[NT]]:
    """A fast C struct for the FUSE hot path: a `NamedTuple` class gets ``STRUCT``,
    ``SIZE``, ``unpack_from`` (straight from `struct.unpack_from`, no per-field work) and
    ``pack``. ``fmt`` is the `struct` format without the byte-order prefix."""

    def deco(cls: type[NT]) -> type[NT]:
        st = struct.Struct("<" + fmt)
        unpack = st.unpack_from
        new = tuple.__new__
        c: Any = cls
        c.STRUCT = st
        c.SIZE = st.size

        def unpack_from(klass: Any, buf: Any, offset: int = 0) -> Any:
            return new(klass, unpack(buf, offset))

        def pack(self: Any) -> bytes:
            return st.pack(*self)

        c.unpack_from = classmethod(unpack_from)
        c.pack = pack
        return cls

    return deco
