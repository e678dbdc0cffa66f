"""The two exception types of vfiofs.

`KernelError` carries an errno for the caller, exactly as a kernel function returns
``-errno``; only ``session/dispatch.py`` turns it into a reply. `ProtocolError` means the
kernel sent a FUSE message we cannot parse. Any other exception is a bug: the dispatcher logs
it and answers ``EIO``.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


class KernelError(Exception):
    """An errno to give the caller, like a kernel function's ``return -EINVAL``.

    Args:
        errno: a positive ``errno.E*`` value.
        msg: why, for the log only; the caller sees just the errno.
    """

    def __init__(self, errno: int, msg: str = "") -> None:
        super().__init__(errno, msg)
        self.errno = errno
        self.msg = msg

    def __str__(self) -> str:
        name = _errno.errorcode.get(self.errno, str(self.errno))
        return f"{name}: {self.msg}" if self.msg else name


class ProtocolError(Exception):
    """The kernel sent a FUSE message that does not parse."""


def for_each_or_unwind(
    items: Iterable[T], do: Callable[[T], object], undo: Callable[[T], object]
) -> None:
    """``do`` every item, or none: on a KernelError, ``undo`` the items done so far (in
    reverse, as the kernel's ``goto unwind`` labels do) and raise it again."""
    done: list[T] = []
    try:
        for item in items:
            do(item)
            done.append(item)
    except KernelError:
        for item in reversed(done):
            undo(item)
        raise
