"""Mirror of drivers/vfio/container.c: the ioctls of ``/dev/vfio/vfio`` and the
vfio-noiommu backend.

Commands the container does not know go to the backend (no backend: EINVAL). The
container struct and its group attach/detach are in vfio.py.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

import attrs

from ..abi import vfio as V
from ..errors import KernelError, for_each_or_unwind
from ..ioctl_table import ArgKind, FileOperations, IoctlOp, IoctlTable, Ucmd
from ..uaccess import CAP_SYS_RAWIO, Caller
from .vfio import (
    VfioContainer,
    VfioGroup,
    VfioIommuDriverOps,
    VfioOptions,
)


@attrs.define(eq=False)
class VfioNoiommu:
    """The vfio-noiommu backend of one container: no translation, no ioctl of its own."""

    def check_extension(self, ext: int) -> int:
        return VFIO_NOIOMMU_OPS.check_extension(ext)

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        raise KernelError(errno.ENOTTY, f"vfio-noiommu has no ioctl {cmd:#x}")

    def attach_group(self, group: VfioGroup) -> None:
        pass

    def detach_group(self, group: VfioGroup) -> None:
        pass

    def release(self) -> None:
        pass

    def ioctl_name(self, cmd: int) -> str | None:
        return None


@attrs.frozen
class VfioNoiommuOps:
    """``vfio_noiommu_ops``."""

    noiommu: bool = True

    def check_extension(self, ext: int) -> int:
        return 1 if ext == V.VFIO_NOIOMMU_IOMMU else 0

    def open(
        self, arg: int, caller: Caller, options: VfioOptions
    ) -> VfioNoiommu | None:
        """``vfio_noiommu_open``: only the noiommu type, only with CAP_SYS_RAWIO."""
        if arg != V.VFIO_NOIOMMU_IOMMU:
            return None
        if not caller.capable(CAP_SYS_RAWIO):
            raise KernelError(errno.EPERM, "noiommu needs CAP_SYS_RAWIO")
        return VfioNoiommu()


VFIO_NOIOMMU_OPS = VfioNoiommuOps()


def vfio_iommu_driver_allowed(c: VfioContainer, ops: VfioIommuDriverOps) -> bool:
    """Only noiommu containers use vfio-noiommu, and they use nothing else; the noiommu
    backend exists only with ``enable_unsafe_noiommu_mode``."""
    if ops.noiommu and not c.options.noiommu:
        return False
    return not c.groups or c.noiommu == ops.noiommu


def vfio_ioctl_get_api_version(c: VfioContainer, ucmd: Ucmd) -> int:
    return V.VFIO_API_VERSION


def vfio_container_ioctl_check_extension(c: VfioContainer, ucmd: Ucmd) -> int:
    ext = ucmd.arg & 0xFFFFFFFFFFFFFFFF
    if c.iommu_driver is not None:
        return c.iommu_driver.check_extension(ext)
    # no backend yet: the first registered one (compatible with the groups) that says yes
    for ops in c.iommu_drivers:
        if vfio_iommu_driver_allowed(c, ops) and ops.check_extension(ext) > 0:
            return 1
    return 0


def vfio_ioctl_set_iommu(c: VfioContainer, ucmd: Ucmd) -> int:
    if not c.groups or c.iommu_driver is not None:
        raise KernelError(errno.EINVAL, "SET_IOMMU needs a group and no backend yet")
    kind = ucmd.arg
    for ops in c.iommu_drivers:
        if not vfio_iommu_driver_allowed(c, ops):
            continue
        driver = ops.open(kind, ucmd.caller, c.options)
        if driver is None:
            continue
        try:  # __vfio_container_attach_groups(): every group, or none
            for_each_or_unwind(c.groups, driver.attach_group, driver.detach_group)
        except KernelError:
            driver.release()
            raise
        c.iommu_driver = driver
        return 0
    raise KernelError(errno.ENODEV, f"no IOMMU backend for type {kind}")


IOCTLS: IoctlTable[VfioContainer] = IoctlTable(
    [
        IoctlOp(
            V.VFIO_CHECK_EXTENSION,
            "VFIO_CHECK_EXTENSION",
            vfio_container_ioctl_check_extension,
            ArgKind.VALUE,
        ),
        IoctlOp(
            V.VFIO_GET_API_VERSION, "VFIO_GET_API_VERSION", vfio_ioctl_get_api_version
        ),
        IoctlOp(
            V.VFIO_SET_IOMMU, "VFIO_SET_IOMMU", vfio_ioctl_set_iommu, ArgKind.VALUE
        ),
    ]
)


def vfio_fops_unl_ioctl(c: VfioContainer, caller: Caller, cmd: int, arg: int) -> int:
    """Our table first; everything else passes through to the backend (none: EINVAL)."""
    op = IOCTLS.ops.get(cmd)
    if op is not None:
        return IOCTLS.call(op, c, caller, arg)
    if c.iommu_driver is None:
        raise KernelError(errno.EINVAL, "no IOMMU backend set (VFIO_SET_IOMMU)")
    return c.iommu_driver.ioctl(caller, cmd, arg)


def vfio_fops_ioctl_name(c: VfioContainer, cmd: int) -> str | None:
    name = IOCTLS.name(cmd)
    if name is None and c.iommu_driver is not None:
        name = c.iommu_driver.ioctl_name(cmd)
    return name


VFIO_FOPS: FileOperations[VfioContainer] = FileOperations(
    vfio_fops_unl_ioctl, vfio_fops_ioctl_name
)


def vfio_fops_open(
    options: VfioOptions, iommu_drivers: Sequence[VfioIommuDriverOps]
) -> VfioContainer:
    """open(/dev/vfio/vfio): a new, empty container."""
    return VfioContainer(VFIO_FOPS, options, iommu_drivers)
