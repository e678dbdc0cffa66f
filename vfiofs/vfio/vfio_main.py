"""Mirror of drivers/vfio/vfio_main.c: the device registry and the device file.

`VfioCore` is the vfio module's state: registered devices, their groups, the cdev index
allocator and the Kconfig switches (`VfioOptions`). Registering a device creates its group
interface and, unless the device is noiommu or cdev support is off, its cdev index
(``__vfio_register_dev``). The fs layer follows hot-plug through ``listeners``.
`VfioDeviceFile` is an open device fd (``struct vfio_device_file``): it dispatches in the
kernel's order and forwards to the bus driver's ops (vfio-pci).
"""

from __future__ import annotations

import errno
import logging
from typing import Any, Protocol

import attrs

from ..abi import vfio as V
from ..errors import KernelError
from ..idr import ida_alloc_min
from ..iommu.group import IommuGroup
from ..uaccess import Caller

log = logging.getLogger("vfiofs.vfio")


@attrs.frozen
class VfioOptions:
    """The kernel's Kconfig switches and module parameters."""

    device_cdev: bool = True
    container: bool = True
    noiommu: bool = True
    iommufd: bool = True
    dma_entry_limit: int = 65535
    address_width: int = 48


class VfioDeviceOps(Protocol):
    """The bus driver's ``struct vfio_device_ops`` (vfio-pci implements it)."""

    def open_device(self, vdev: VfioDevice) -> None: ...
    def close_device(self, vdev: VfioDevice) -> None: ...
    def ioctl(self, df: VfioDeviceFile, caller: Caller, cmd: int, arg: int) -> int: ...
    def read(
        self, df: VfioDeviceFile, caller: Caller, offset: int, size: int
    ) -> bytes: ...
    def write(
        self, df: VfioDeviceFile, caller: Caller, offset: int, data: bytes
    ) -> int: ...
    def match(self, name: str) -> bool: ...
    def ioctl_name(self, cmd: int) -> str | None: ...


class VfioListener(Protocol):
    def group_added(self, group: Any) -> None: ...
    def group_removed(self, group: Any) -> None: ...
    def device_added(self, vdev: VfioDevice) -> None: ...
    def device_removed(self, vdev: VfioDevice) -> None: ...


@attrs.define(eq=False)
class VfioDevice:
    """A registered vfio device (``struct vfio_device``)."""

    name: str
    ops: VfioDeviceOps
    dev: Any  # the PciDevice
    iommu_group: IommuGroup
    group: Any = None  # VfioGroup, set at registration
    index: int | None = None  # the cdev minor (vfioX), None without a cdev
    open_count: int = 0
    registered: bool = False
    removing: bool = False

    @property
    def noiommu(self) -> bool:
        return self.iommu_group.noiommu

    def open(self) -> None:
        """``vfio_df_open``: the driver's open_device runs on the first open only."""
        if self.removing:
            raise KernelError(errno.ENODEV, f"{self.name} is being removed")
        if self.open_count == 0:
            self.ops.open_device(self)
        self.open_count += 1

    def close(self) -> None:
        self.open_count -= 1
        if self.open_count == 0:
            self.ops.close_device(self)
            if self.removing and self.group is not None:
                self.group.core._finish_unregister(self)


@attrs.define(eq=False)
class VfioDeviceFile:
    """An open device fd (``struct vfio_device_file``)."""

    device: VfioDevice
    group_file: Any = None  # the VfioGroupFile for the group path
    cdev: bool = False  # opened from /dev/vfio/devices/vfioX
    access_granted: bool = True
    closed: bool = False
    idev: Any = (
        None  # the iommufd DEVICE this fd is bound to (cdev, or group + iommufd)
    )

    def ioctl_name(self, cmd: int) -> str | None:
        names = {
            V.VFIO_DEVICE_BIND_IOMMUFD: "VFIO_DEVICE_BIND_IOMMUFD",
            V.VFIO_DEVICE_ATTACH_IOMMUFD_PT: "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
            V.VFIO_DEVICE_DETACH_IOMMUFD_PT: "VFIO_DEVICE_DETACH_IOMMUFD_PT",
            V.VFIO_DEVICE_FEATURE: "VFIO_DEVICE_FEATURE",
        }
        return names.get(cmd) or self.device.ops.ioctl_name(cmd)

    def _check(self) -> None:
        if self.closed or self.device.removing:
            raise KernelError(errno.ENODEV, f"{self.device.name} is gone")

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        """``vfio_device_fops_unl_ioctl``: BIND first, then access, then core, then driver."""
        self._check()
        if cmd == V.VFIO_DEVICE_BIND_IOMMUFD:
            if not self.cdev:  # kernel: only cdev fds may bind
                raise KernelError(
                    errno.EINVAL, "BIND_IOMMUFD on a group-path device fd"
                )
            from .device_cdev import vfio_df_ioctl_bind_iommufd

            return vfio_df_ioctl_bind_iommufd(self, caller, arg)
        if not self.access_granted:
            raise KernelError(errno.EINVAL, "device fd not bound to an iommufd")
        if self.cdev and cmd in (
            V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            V.VFIO_DEVICE_DETACH_IOMMUFD_PT,
        ):
            from .device_cdev import vfio_df_ioctl_attach_pt, vfio_df_ioctl_detach_pt

            if cmd == V.VFIO_DEVICE_ATTACH_IOMMUFD_PT:
                return vfio_df_ioctl_attach_pt(self, caller, arg)
            return vfio_df_ioctl_detach_pt(self, caller, arg)
        if cmd == V.VFIO_DEVICE_FEATURE:
            return vfio_ioctl_device_feature(self, caller, arg)
        return self.device.ops.ioctl(self, caller, cmd, arg)

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        self._check()
        if not self.access_granted:
            raise KernelError(errno.EINVAL)
        return self.device.ops.read(self, caller, offset, size)

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        self._check()
        if not self.access_granted:
            raise KernelError(errno.EINVAL)
        return self.device.ops.write(self, caller, offset, data)

    def release(self) -> None:
        """The last close: close the device (vfio-pci resets it), drop the group ref."""
        if self.closed:
            return
        self.closed = True
        if self.cdev and not self.access_granted:
            return  # never bound: nothing was opened
        self.device.close()
        if self.idev is not None:
            from ..iommufd.device import iommufd_device_unbind

            iommufd_device_unbind(self.idev)
            self.idev = None
            if self.cdev:
                self.device.group.cdev_bound -= 1
        if self.group_file is not None:
            self.group_file.put()


def vfio_ioctl_device_feature(df: VfioDeviceFile, caller: Caller, arg: int) -> int:
    """VFIO_DEVICE_FEATURE: argsz/flags checks; vfio-pci here supports no feature."""
    minsz = V.VfioDeviceFeature.SIZE
    raw = caller.copy_from_user(arg, minsz)
    feature = V.VfioDeviceFeature.unpack_from(raw)
    if feature.argsz < minsz:
        raise KernelError(errno.EINVAL, "argsz")
    known = (
        V.VFIO_DEVICE_FEATURE_MASK
        | V.VFIO_DEVICE_FEATURE_GET
        | V.VFIO_DEVICE_FEATURE_SET
        | V.VFIO_DEVICE_FEATURE_PROBE
    )
    if feature.flags & ~known:
        raise KernelError(errno.EINVAL, "unknown feature flags")
    if not feature.flags & V.VFIO_DEVICE_FEATURE_PROBE and (
        feature.flags & (V.VFIO_DEVICE_FEATURE_GET | V.VFIO_DEVICE_FEATURE_SET)
        == (V.VFIO_DEVICE_FEATURE_GET | V.VFIO_DEVICE_FEATURE_SET)
    ):
        raise KernelError(errno.EINVAL, "GET and SET together without PROBE")
    raise KernelError(
        errno.ENOTTY,
        f"feature {feature.flags & V.VFIO_DEVICE_FEATURE_MASK} not supported",
    )


@attrs.define(eq=False)
class VfioCore:
    """The vfio module: registered devices, groups, the cdev ida and the options."""

    options: VfioOptions = VfioOptions()
    groups: dict[int, Any] = attrs.Factory(dict)  # iommu group id -> VfioGroup
    devices: dict[str, VfioDevice] = attrs.Factory(dict)
    listeners: list[VfioListener] = attrs.Factory(list)
    _cdev_ida: set[int] = attrs.Factory(set)

    def register_device(self, vdev: VfioDevice) -> None:
        """``__vfio_register_dev``: group interface, then (maybe) the cdev."""
        from .group import VfioGroup

        if vdev.name in self.devices:
            raise KernelError(errno.EEXIST, f"{vdev.name} is already registered")
        if vdev.noiommu and not self.options.noiommu:
            raise KernelError(
                errno.EINVAL, f"{vdev.name}: no IOMMU and noiommu mode is off"
            )
        group = self.groups.get(vdev.iommu_group.id)
        new_group = group is None
        if group is None:
            group = VfioGroup(self, vdev.iommu_group)
            self.groups[vdev.iommu_group.id] = group
        vdev.group = group
        group.devices.append(vdev)
        if vdev.dev is not None and vdev.dev not in vdev.iommu_group.devices:
            vdev.iommu_group.devices.append(vdev.dev)
        if self.options.device_cdev and self.options.iommufd and not vdev.noiommu:
            vdev.index = ida_alloc_min(self._cdev_ida)
            self._cdev_ida.add(vdev.index)
        vdev.registered = True
        self.devices[vdev.name] = vdev
        if new_group:
            for lst in self.listeners:
                lst.group_added(group)
        for lst in self.listeners:
            lst.device_added(vdev)

    def unregister_device(self, vdev: VfioDevice) -> None:
        """``vfio_unregister_group_dev``: users see ENODEV now; the device goes away when
        its last fd closes."""
        if not vdev.registered or vdev.removing:
            return
        vdev.removing = True
        if vdev.open_count == 0:
            self._finish_unregister(vdev)

    def _finish_unregister(self, vdev: VfioDevice) -> None:
        vdev.registered = False
        self.devices.pop(vdev.name, None)
        if vdev.index is not None:
            self._cdev_ida.discard(vdev.index)
        group = vdev.group
        group.devices.remove(vdev)
        if vdev.dev in vdev.iommu_group.devices:
            vdev.iommu_group.devices.remove(vdev.dev)
        for lst in self.listeners:
            lst.device_removed(vdev)
        if not group.devices:
            del self.groups[vdev.iommu_group.id]
            group.removed = True
            for lst in self.listeners:
                lst.group_removed(group)

    def open_container(self, caller: Caller, flags: int) -> Any:
        """open(/dev/vfio/vfio): a new, empty container."""
        from .container import VfioContainer

        return VfioContainer(self)
