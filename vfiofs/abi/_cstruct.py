"""`@cstruct`: C structs as frozen attrs classes backed by one `struct.Struct`; `CTuple`:
the same contract as tuples, for the FUSE hot path.

Each field carries its `struct` format code in its metadata (`u32()`, `u64()`, ...). The
decorator compiles ``"<" + codes`` (x86-64 is little-endian; every pad is spelled out, so
there is no implicit padding) and adds ``SIZE``, ``unpack_from``, ``pack``, ``offsetof``
and ``offsetofend``. No validators: `struct.pack` range-checks, semantics live in handlers.
"""

from __future__ import annotations

import collections
import re
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


# namedtuple's attribute getters are C descriptors: borrowing them makes a `CTuple`'s
# fields exactly as fast as a NamedTuple's (mypy needs a plain call, hence the alias).
_namedtuple: Callable[..., type[tuple[Any, ...]]] = collections.namedtuple  # noqa: PYI024
_ITEM = re.compile(r"(\d*)([a-zA-Z?])")


@dataclass_transform(frozen_default=True)
class CTupleMeta(type):
    """Builds a `CTuple` class: slots, field getters, the compiled `struct.Struct`."""

    def __new__(
        mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any], fmt: str = ""
    ) -> CTupleMeta:
        ns.setdefault("__slots__", ())
        cls = super().__new__(mcls, name, bases, ns)
        if not fmt:  # the base class itself
            return cls
        names = tuple(ns.get("__annotations__", {}))
        codes = []
        for count, code in _ITEM.findall(fmt):
            if code in "sp":  # "44s" is one field of 44 bytes
                codes.append(count + code)
            else:
                codes.extend([code] * int(count or 1))
        if len(codes) != len(names):
            raise TypeError(
                f"{name}: {len(names)} fields, format {fmt!r} has {len(codes)}"
            )
        getters = _namedtuple(name, names)
        ends: dict[str, int] = {}
        off = 0
        for n, code in zip(names, codes, strict=True):
            setattr(cls, n, getters.__dict__[n])
            off += struct.calcsize("<" + code)
            ends[n] = off
        st = struct.Struct("<" + fmt)
        c: Any = cls  # the ClassVars of CTuple, filled in for this class
        c.STRUCT, c.SIZE, c.FIELDS, c.ENDS = st, st.size, names, ends
        return cls


class CTuple(tuple[Any, ...], metaclass=CTupleMeta):
    """A fast C struct for the FUSE hot path: a tuple subclass with named fields.

    ``class FuseOpenIn(CTuple, fmt="II"): flags: int; open_flags: int`` gets what a
    `NamedTuple` has (C-speed field getters, ``_replace``) plus ``STRUCT``, ``SIZE``,
    ``unpack_from`` (straight from `struct.unpack_from`, no per-field work), ``pack`` and
    ``offsetofend``; mypy sees typed fields and a typed constructor. ``fmt`` is the
    `struct` format without the byte-order prefix, one item per field.
    """

    __slots__ = ()
    SIZE: ClassVar[int]
    STRUCT: ClassVar[struct.Struct]
    FIELDS: ClassVar[tuple[str, ...]]
    ENDS: ClassVar[dict[str, int]]

    def __new__(cls, *values: Any, **fields: Any) -> Self:
        if fields:
            try:
                values += tuple(fields.pop(n) for n in cls.FIELDS[len(values) :])
            except KeyError as e:
                raise TypeError(f"{cls.__name__}: missing field {e}") from None
            if fields:
                raise TypeError(f"{cls.__name__} has no field {next(iter(fields))}")
        if len(values) != len(cls.FIELDS):
            raise TypeError(f"{cls.__name__} takes {len(cls.FIELDS)} fields")
        return tuple.__new__(cls, values)

    def pack(self) -> bytes:
        """The C bytes of this struct."""
        return self.STRUCT.pack(*self)

    @classmethod
    def unpack_from(cls, buf: bytes | bytearray | memoryview, offset: int = 0) -> Self:
        """Decode ``SIZE`` bytes of ``buf`` at ``offset``."""
        return tuple.__new__(cls, cls.STRUCT.unpack_from(buf, offset))

    @classmethod
    def offsetofend(cls, name: str) -> int:
        """``offsetofend(struct, name)``: where field ``name`` ends."""
        return cls.ENDS[name]

    def _replace(self, **changes: Any) -> Self:
        values = [changes.pop(n, v) for n, v in zip(self.FIELDS, self, strict=True)]
        if changes:
            raise TypeError(f"{type(self).__name__} has no field {next(iter(changes))}")
        return tuple.__new__(type(self), values)

    def __repr__(self) -> str:
        items = ", ".join(f"{n}={v!r}" for n, v in zip(self.FIELDS, self, strict=True))
        return f"{type(self).__name__}({items})"
