"""Mirror of drivers/vfio/container.c: ``/dev/vfio/vfio``.

A container holds groups and, after VFIO_SET_IOMMU, one IOMMU backend (type1 or noiommu).
Commands the container does not know go to the backend (no backend: EINVAL). There is no
"unset": when the last group leaves, the backend is released with all its mappings.
Closing the container fd does not detach groups.
"""

from __future__ import annotations

import errno
from typing import Any, Protocol

import attrs

from ..abi import vfio as V
from ..errors import KernelError
from ..ioctl_table import ArgKind, IoctlOp, IoctlTable, Ucmd
from ..uaccess import CAP_SYS_RAWIO, Caller
from .vfio_main import VfioCore


class VfioIommuDriver(Protocol):
    """``struct vfio_iommu_driver_ops``."""

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int: ...
    def check_extension(self, ext: int) -> int: ...
    def attach_group(self, group: Any) -> None: ...
    def detach_group(self, group: Any) -> None: ...
    def release(self) -> None: ...
    def ioctl_name(self, cmd: int) -> str | None: ...


def _backends(core: VfioCore, noiommu: bool | None) -> list[tuple[str, Any]]:
    from .vfio_iommu_type1 import VfioIommuType1

    out: list[tuple[str, Any]] = []
    if noiommu is not True:
        out.append(("type1", VfioIommuType1))
    if noiommu is not False and core.options.noiommu:
        out.append(("noiommu", VfioNoiommu))
    return out


@attrs.define(eq=False)
class VfioNoiommu:
    """container.c's ``vfio_noiommu_ops``: no translation, nothing but CHECK_EXTENSION."""

    @staticmethod
    def supports(ext: int) -> int:
        return 1 if ext == V.VFIO_NOIOMMU_IOMMU else 0

    def check_extension(self, ext: int) -> int:
        return self.supports(ext)

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        if cmd == V.VFIO_CHECK_EXTENSION:
            return self.supports(arg)
        raise KernelError(errno.ENOTTY)

    def attach_group(self, group: Any) -> None:
        pass

    def detach_group(self, group: Any) -> None:
        pass

    def release(self) -> None:
        pass

    def ioctl_name(self, cmd: int) -> str | None:
        return None


@attrs.define(eq=False)
class VfioContainer:
    """An open ``/dev/vfio/vfio``."""

    core: VfioCore
    groups: list[Any] = attrs.Factory(list)
    iommu_driver: Any = None
    noiommu: bool = False

    def ioctl_name(self, cmd: int) -> str | None:
        name = IOCTLS.name(cmd)
        if name is None and self.iommu_driver is not None:
            name = self.iommu_driver.ioctl_name(cmd)
        return name

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        op = IOCTLS.ops.get(cmd)
        if op is not None:
            return IOCTLS.call(op, self, caller, arg)
        if self.iommu_driver is None:
            raise KernelError(errno.EINVAL, "no IOMMU backend set (VFIO_SET_IOMMU)")
        return int(self.iommu_driver.ioctl(caller, cmd, arg))

    def release(self) -> None:
        """Closing the fd does not detach groups; the container lives on with them."""

    # --- groups ------------------------------------------------------------------------

    def attach_group(self, group: Any, caller: Caller) -> None:
        """``vfio_container_attach_group``, called by SET_CONTAINER."""
        if group.noiommu and not caller.capable(CAP_SYS_RAWIO):
            raise KernelError(errno.EPERM, "noiommu group needs CAP_SYS_RAWIO")
        if self.groups and self.noiommu != group.noiommu:
            raise KernelError(errno.EPERM, "container holds groups of the other kind")
        iommu_group = group.iommu_group
        if not group.noiommu:
            # kernel: iommu_group_claim_dma_owner() (EPERM not viable, EBUSY owned)
            iommu_group.claim_dma_owner(self)
        try:
            if self.iommu_driver is not None:
                self.iommu_driver.attach_group(group)
        except KernelError:
            iommu_group.release_dma_owner(self)
            raise
        self.noiommu = group.noiommu
        group.container = self
        self.groups.append(group)

    def detach_group(self, group: Any) -> None:
        """``vfio_group_detach_container``: the last group releases the backend."""
        if self.iommu_driver is not None:
            self.iommu_driver.detach_group(group)
        group.iommu_group.release_dma_owner(self)
        group.container = None
        self.groups.remove(group)
        if not self.groups:
            if self.iommu_driver is not None:
                self.iommu_driver.release()
            self.iommu_driver = None
            self.noiommu = False


def vfio_ioctl_get_api_version(c: VfioContainer, ucmd: Ucmd) -> int:
    return V.VFIO_API_VERSION


def vfio_container_ioctl_check_extension(c: VfioContainer, ucmd: Ucmd) -> int:
    ext = ucmd.arg & 0xFFFFFFFFFFFFFFFF
    if c.iommu_driver is not None:
        return int(c.iommu_driver.check_extension(ext))
    # no backend yet: ask each one (compatible with the groups held) without state
    for _, backend in _backends(c.core, c.noiommu if c.groups else None):
        if backend.supports(ext):
            return 1
    return 0


def vfio_ioctl_set_iommu(c: VfioContainer, ucmd: Ucmd) -> int:
    if not c.groups or c.iommu_driver is not None:
        raise KernelError(errno.EINVAL, "SET_IOMMU needs a group and no backend yet")
    kind = ucmd.arg
    for name, backend in _backends(c.core, c.noiommu):
        if name == "type1" and kind in (
            V.VFIO_TYPE1_IOMMU,
            V.VFIO_TYPE1v2_IOMMU,
            V.VFIO_TYPE1_NESTING_IOMMU,
        ):
            driver = backend(c.core, v2=kind != V.VFIO_TYPE1_IOMMU)
        elif name == "noiommu" and kind == V.VFIO_NOIOMMU_IOMMU:
            if not ucmd.caller.capable(CAP_SYS_RAWIO):
                raise KernelError(errno.EPERM, "noiommu needs CAP_SYS_RAWIO")
            driver = backend()
        else:
            continue
        attached = []
        try:
            for group in c.groups:
                driver.attach_group(group)
                attached.append(group)
        except KernelError:
            for group in attached:
                driver.detach_group(group)
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
