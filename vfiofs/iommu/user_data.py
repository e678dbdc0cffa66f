"""Driver-specific data from user space, as include/linux/iommu.h hands it to IOMMU
drivers: ``struct iommu_user_data`` (HWPT_ALLOC's and VIOMMU_ALLOC's ``data_uptr``) and
``struct iommu_user_data_array`` (HWPT_INVALIDATE's entries), with the copy helpers
``iommu_copy_struct_from_user`` / ``iommu_copy_struct_from_user_array`` /
``iommu_copy_struct_to_user``.

A driver reads the blob into its own struct: shorter than the struct's mandatory part is
EINVAL, longer with a non-zero tail is E2BIG (``copy_struct_from_user``).
"""

from __future__ import annotations

import errno
from typing import TypeVar

from ..abi._cstruct import CStruct
from ..errors import KernelError
from ..ioctl_table import copy_struct_from_user
from ..uaccess import Caller

S = TypeVar("S", bound=CStruct)


class UserData:
    """``struct iommu_user_data``: ``len`` bytes of type ``type`` at ``uptr``."""

    def __init__(self, caller: Caller, type_: int, uptr: int, length: int) -> None:
        self.caller, self.type, self.uptr, self.len = caller, type_, uptr, length

    def copy(self, st: type[S], last: str) -> S:
        """``iommu_copy_struct_from_user``: EINVAL if shorter than ``last`` needs,
        E2BIG for a non-zero tail past ``st``."""
        if self.len < st.offsetofend(last):
            raise KernelError(errno.EINVAL, f"data_len {self.len}")
        return copy_struct_from_user(self.caller, st, self.uptr, self.len)

    def copy_back(self, st: CStruct) -> None:
        """``iommu_copy_struct_to_user``: the driver's answer, at most ``len`` bytes."""
        self.caller.copy_to_user(self.uptr, st.pack()[: self.len])


def user_data(caller: Caller, type_: int, uptr: int, length: int) -> UserData | None:
    """The blob of an ioctl, or None when it has none (``data_len`` 0)."""
    return UserData(caller, type_, uptr, length) if length else None


class UserDataArray:
    """``struct iommu_user_data_array``: ``entry_num`` entries of ``entry_len`` bytes at
    ``uptr``. The driver counts the entries it handled in ``done``, which the ioctl
    reports back even when it fails part way."""

    def __init__(
        self, caller: Caller, type_: int, uptr: int, entry_len: int, entry_num: int
    ) -> None:
        self.caller, self.type, self.uptr = caller, type_, uptr
        self.entry_len, self.entry_num = entry_len, entry_num
        self.done = 0

    def entry(self, st: type[S], index: int, last: str) -> S:
        """``iommu_copy_struct_from_user_array``: entry ``index``, zero-extended if
        ``entry_len`` is shorter than ``st`` (EINVAL below ``last``), E2BIG for a
        non-zero tail past it."""
        if self.entry_len < st.offsetofend(last):
            raise KernelError(errno.EINVAL, f"entry_len {self.entry_len}")
        return copy_struct_from_user(
            self.caller, st, self.uptr + index * self.entry_len, self.entry_len
        )
