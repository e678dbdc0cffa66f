"""Mirror of drivers/vfio/vfio_main.c: the device registry and the device-fd ioctls.

`VfioCore` is the vfio module's state: registered devices, their groups, the cdev index
allocator, the registered IOMMU backends and the Kconfig switches (`VfioOptions`).
Registering a device creates its group and, unless the device is noiommu or cdev
support is off, its cdev index (``__vfio_register_dev``). The fs layer follows
hot-plug through ``listeners``.

A device fd's ioctls (``vfio_device_fops_unl_ioctl``) go through tables in the kernel's
order: BIND_IOMMUFD first, then nothing without access, then the cdev-only commands,
then the core's (VFIO_DEVICE_FEATURE), then the bus driver's own table.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable

import attrs

from ..abi import vfio as V
from ..errors import KernelError
from ..idr import ida_alloc_min
from ..ioctl_table import ArgKind, FileOperations, IoctlOp, IoctlTable, Ucmd
from ..uaccess import Caller
from .container import VFIO_NOIOMMU_OPS, vfio_fops_open
from .device_cdev import (
    vfio_df_ioctl_attach_pt,
    vfio_df_ioctl_bind_iommufd,
    vfio_df_ioctl_detach_pt,
)
from .group import VFIO_GROUP_FOPS
from .vfio import (
    VfioContainer,
    VfioDevice,
    VfioDeviceFile,
    VfioGroup,
    VfioIommuDriverOps,
    VfioListener,
    VfioOptions,
)
from .vfio_iommu_type1 import VFIO_IOMMU_TYPE1_OPS

# --- VFIO_DEVICE_FEATURE -----------------------------------------------------------------

FeatureHandler = Callable[[VfioDeviceFile, Caller, int, int, int], int]
"""``handler(df, caller, flags, data, data_size)``: one feature, given the feature's
``flags`` and where its ``data[]`` is (``arg->data``, ``argsz - minsz`` bytes)."""


@attrs.frozen
class DeviceFeature:
    """One entry of ``vfio_ioctl_device_feature``'s switch on the feature index."""

    index: int
    name: str
    handler: FeatureHandler


# The features the devices support, by index. None yet: every index is answered as
# vfio-pci's vfio_pci_core_ioctl_feature() answers one it does not know.
FEATURES: dict[int, DeviceFeature] = {}

FEATURE_FLAGS = (
    V.VFIO_DEVICE_FEATURE_MASK
    | V.VFIO_DEVICE_FEATURE_GET
    | V.VFIO_DEVICE_FEATURE_SET
    | V.VFIO_DEVICE_FEATURE_PROBE
)


def vfio_ioctl_device_feature(df: VfioDeviceFile, ucmd: Ucmd) -> int:
    """VFIO_DEVICE_FEATURE: the flag checks, then the feature named by its index."""
    feature: V.VfioDeviceFeature = ucmd.cmd
    flags = feature.flags
    if flags & ~FEATURE_FLAGS:
        raise KernelError(errno.EINVAL, "unknown feature flags")
    get_set = V.VFIO_DEVICE_FEATURE_GET | V.VFIO_DEVICE_FEATURE_SET
    if not flags & V.VFIO_DEVICE_FEATURE_PROBE and flags & get_set == get_set:
        raise KernelError(errno.EINVAL, "GET and SET together without PROBE")
    entry = FEATURES.get(flags & V.VFIO_DEVICE_FEATURE_MASK)
    if entry is None:
        raise KernelError(
            errno.ENOTTY, f"feature {flags & V.VFIO_DEVICE_FEATURE_MASK} not supported"
        )
    minsz = V.VfioDeviceFeature.SIZE
    return entry.handler(df, ucmd.caller, flags, ucmd.arg + minsz, ucmd.argsz - minsz)


# --- the device fd -------------------------------------------------------------------------

BIND_IOCTLS: IoctlTable[VfioDeviceFile] = IoctlTable(
    [
        IoctlOp(
            V.VFIO_DEVICE_BIND_IOMMUFD,
            "VFIO_DEVICE_BIND_IOMMUFD",
            vfio_df_ioctl_bind_iommufd,
            ArgKind.SIZE,  # get_user(argsz) + copy_struct_from_user (E2BIG)
            V.VfioDeviceBindIommufd,
            "out_devid",
        ),
    ]
)

CDEV_IOCTLS: IoctlTable[VfioDeviceFile] = IoctlTable(
    [
        IoctlOp(
            V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
            vfio_df_ioctl_attach_pt,
            ArgKind.ARGSZ,
            V.VfioDeviceAttachIommufdPt,
            "pt_id",
        ),
        IoctlOp(
            V.VFIO_DEVICE_DETACH_IOMMUFD_PT,
            "VFIO_DEVICE_DETACH_IOMMUFD_PT",
            vfio_df_ioctl_detach_pt,
            ArgKind.ARGSZ,
            V.VfioDeviceDetachIommufdPt,
            "flags",
        ),
    ]
)

DEVICE_IOCTLS: IoctlTable[VfioDeviceFile] = IoctlTable(
    [
        IoctlOp(
            V.VFIO_DEVICE_FEATURE,
            "VFIO_DEVICE_FEATURE",
            vfio_ioctl_device_feature,
            ArgKind.ARGSZ,
            V.VfioDeviceFeature,
            "flags",
        ),
    ]
)


def vfio_device_fops_unl_ioctl(
    df: VfioDeviceFile, caller: Caller, cmd: int, arg: int
) -> int:
    """BIND first (any fd: the handler refuses group fds), then access, then the
    cdev-only commands, then the core's, then the bus driver (vfio-pci)."""
    op = BIND_IOCTLS.ops.get(cmd)
    if op is not None:
        return BIND_IOCTLS.call(op, df, caller, arg)
    if not df.access_granted:
        raise KernelError(errno.EINVAL, "device fd not bound to an iommufd")
    if df.cdev:
        op = CDEV_IOCTLS.ops.get(cmd)
        if op is not None:
            return CDEV_IOCTLS.call(op, df, caller, arg)
    op = DEVICE_IOCTLS.ops.get(cmd)
    if op is not None:
        return DEVICE_IOCTLS.call(op, df, caller, arg)
    return df.device.ops.ioctl(df, caller, cmd, arg)


def vfio_device_fops_ioctl_name(df: VfioDeviceFile, cmd: int) -> str | None:
    for table in (BIND_IOCTLS, CDEV_IOCTLS, DEVICE_IOCTLS):
        name = table.name(cmd)
        if name is not None:
            return name
    return df.device.ops.ioctl_name(cmd)


VFIO_DEVICE_FOPS: FileOperations[VfioDeviceFile] = FileOperations(
    vfio_device_fops_unl_ioctl, vfio_device_fops_ioctl_name
)


# --- the registry ---------------------------------------------------------------------------


def _iommu_drivers() -> list[VfioIommuDriverOps]:
    # vfio_register_iommu_driver() adds at the head: type1 (loaded later) comes first
    return [VFIO_IOMMU_TYPE1_OPS, VFIO_NOIOMMU_OPS]


@attrs.define(eq=False)
class VfioCore:
    """The vfio module: registered devices, groups, the cdev ida, the IOMMU backends
    and the options."""

    options: VfioOptions = attrs.Factory(VfioOptions)
    groups: dict[int, VfioGroup] = attrs.Factory(dict)  # iommu group id -> group
    devices: dict[str, VfioDevice] = attrs.Factory(dict)
    listeners: list[VfioListener] = attrs.Factory(list)
    iommu_drivers: list[VfioIommuDriverOps] = attrs.Factory(_iommu_drivers)
    _cdev_ida: set[int] = attrs.Factory(set)

    def register_device(self, vdev: VfioDevice) -> None:
        """``__vfio_register_dev``: group interface, then (maybe) the cdev."""
        if vdev.name in self.devices:
            raise KernelError(errno.EEXIST, f"{vdev.name} is already registered")
        if vdev.noiommu and not self.options.noiommu:
            raise KernelError(
                errno.EINVAL, f"{vdev.name}: no IOMMU and noiommu mode is off"
            )
        group = self.groups.get(vdev.iommu_group.id)
        new_group = group is None
        if group is None:
            group = VfioGroup(vdev.iommu_group, VFIO_GROUP_FOPS)
            self.groups[vdev.iommu_group.id] = group
        vdev.group = group
        vdev.fops = VFIO_DEVICE_FOPS
        group.devices.append(vdev)
        if vdev.dev not in vdev.iommu_group.devices:
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
        else:
            vdev.comp = functools.partial(self._finish_unregister, vdev)

    def _finish_unregister(self, vdev: VfioDevice) -> None:
        vdev.registered = False
        self.devices.pop(vdev.name, None)
        if vdev.index is not None:
            self._cdev_ida.discard(vdev.index)
        group = vdev.group
        assert group is not None  # set at registration
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

    def open_container(self, caller: Caller, flags: int) -> VfioContainer:
        """open(/dev/vfio/vfio): a new, empty container that knows our backends."""
        return vfio_fops_open(self.options, self.iommu_drivers)
