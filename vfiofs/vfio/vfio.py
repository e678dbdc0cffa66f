"""Mirror of drivers/vfio/vfio.h: the structs of the vfio core and the functions its
files share.

The structs are the core's object graph: `VfioDevice`, its `VfioGroup`, a
`VfioContainer`, and the open files `VfioGroupFile` and `VfioDeviceFile`. Each file
keeps the `FileOperations` it was opened with (``file->f_op``): a group's come from
group.py, a device's from vfio_main.py, a container's from container.py. Every module
of vfio/ imports this header and the layers below, never another handler module;
vfio_main.py, which registers devices and owns the device-fd ioctls, imports the rest.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from ..devices.pci import PciDevice
from ..errors import KernelError
from ..ioctl_table import FileOperations
from ..iommu.group import IommuGroup
from ..iommufd.device import (
    iommufd_device_attach,
    iommufd_device_bind,
    iommufd_device_unbind,
)
from ..iommufd.iommufd_private import IommufdCtx, IommufdDevice
from ..iommufd.vfio_compat import compat_ioas
from ..uaccess import CAP_SYS_RAWIO, Caller

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


class VfioIommuDriver(Protocol):
    """An IOMMU backend serving one container: ``struct vfio_iommu_driver_ops`` bound to
    the ``iommu_data`` its ``open`` made."""

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int: ...
    def check_extension(self, ext: int) -> int: ...
    def attach_group(self, group: VfioGroup) -> None: ...
    def detach_group(self, group: VfioGroup) -> None: ...
    def release(self) -> None: ...
    def ioctl_name(self, cmd: int) -> str | None: ...


class VfioIommuDriverOps(Protocol):
    """A registered IOMMU backend (``vfio_register_iommu_driver``): what a container asks
    before it has one."""

    @property
    def noiommu(self) -> bool:
        """Whether this is vfio-noiommu, the only backend of noiommu containers."""
        ...

    def check_extension(self, ext: int) -> int:
        """``ops->ioctl(NULL, VFIO_CHECK_EXTENSION, ext)``: with no backend state."""
        ...

    def open(
        self, arg: int, caller: Caller, options: VfioOptions
    ) -> VfioIommuDriver | None:
        """``ops->open(arg)`` for SET_IOMMU: None when ``arg`` is not a type it serves;
        raises KernelError (EPERM) when it refuses the caller."""
        ...


class VfioListener(Protocol):
    """Who follows hot-plug (the fs layer's device nodes and sysfs)."""

    def group_added(self, group: VfioGroup) -> None: ...
    def group_removed(self, group: VfioGroup) -> None: ...
    def device_added(self, vdev: VfioDevice) -> None: ...
    def device_removed(self, vdev: VfioDevice) -> None: ...


@attrs.define(eq=False)
class VfioDevice:
    """``struct vfio_device``: a device registered with the vfio core.

    Registration gives it its group, its cdev index and ``fops``, the file operations
    of its fds (``cdev_init(&device->cdev, &vfio_device_fops)``).
    """

    name: str
    ops: VfioDeviceOps
    dev: PciDevice
    iommu_group: IommuGroup
    group: VfioGroup | None = None  # set at registration
    index: int | None = None  # the cdev minor (vfioX), None without a cdev
    fops: FileOperations[VfioDeviceFile] | None = None  # set at registration
    open_count: int = 0
    registered: bool = False
    removing: bool = False
    # vfio_unregister_group_dev() waits on device->comp: the last close completes it
    comp: Callable[[], None] | None = None

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
            if self.removing and self.comp is not None:
                comp, self.comp = self.comp, None
                comp()


@attrs.define(eq=False)
class VfioGroup:
    """``struct vfio_group``: ``/dev/vfio/$GROUP`` (``noiommu-$N``).

    ``fops`` are the file operations of its fds (``cdev_init(&group->cdev,
    &vfio_group_fops)``). A group file is opened by one user at a time (EBUSY).
    """

    iommu_group: IommuGroup
    fops: FileOperations[VfioGroupFile]
    devices: list[VfioDevice] = attrs.Factory(list)
    container: VfioContainer | None = None
    iommufd: IommufdCtx | None = None  # an iommufd used as the container (compat)
    opened_file: VfioGroupFile | None = None
    removed: bool = False
    cdev_bound: int = 0  # devices bound through their cdev (vfio_device_block_group)

    @property
    def name(self) -> str:
        return (
            f"noiommu-{self.iommu_group.id}"
            if self.iommu_group.noiommu
            else str(self.iommu_group.id)
        )

    @property
    def noiommu(self) -> bool:
        return self.iommu_group.noiommu

    def open(self, caller: Caller, flags: int) -> VfioGroupFile:
        """``vfio_group_fops_open``."""
        if self.removed or not self.devices:
            raise KernelError(errno.ENODEV, f"group {self.name} is gone")
        if self.noiommu and not caller.capable(CAP_SYS_RAWIO):
            raise KernelError(errno.EPERM, "noiommu group needs CAP_SYS_RAWIO")
        if self.cdev_bound:
            raise KernelError(
                errno.EBUSY, f"a device of group {self.name} is bound through its cdev"
            )
        if self.opened_file is not None:
            raise KernelError(errno.EBUSY, f"group {self.name} is already open")
        self.opened_file = VfioGroupFile(self, self.fops)
        return self.opened_file


@attrs.define(eq=False)
class VfioGroupFile:
    """An open group fd. ``refs`` counts the fd itself plus its device fds: the group
    leaves its container only when the group fd *and* every device fd are closed."""

    group: VfioGroup
    fops: FileOperations[VfioGroupFile]
    refs: int = 1

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        return self.fops.unlocked_ioctl(self, caller, cmd, arg)

    def ioctl_name(self, cmd: int) -> str | None:
        return self.fops.ioctl_name(self, cmd)

    def release(self) -> None:
        self.put()

    def put(self) -> None:
        """Drop one reference; the last one detaches the container (group.c release)."""
        self.refs -= 1
        if self.refs:
            return
        group = self.group
        if group.container is not None:
            group.container.detach_group(group)
        group.iommufd = None
        group.opened_file = None

    def find_device(self, caller: Caller, name: str) -> VfioDevice:
        """The checks of ``vfio_group_ioctl_get_device_fd`` / ``vfio_device_open_file``,
        in the kernel's order, without opening anything."""
        group = self.group
        vdev = next(
            (d for d in group.devices if not d.removing and d.ops.match(name)), None
        )
        if vdev is None:
            raise KernelError(errno.ENODEV, f"no device {name!r} in group {group.name}")
        if group.container is None and group.iommufd is None:
            raise KernelError(errno.EINVAL, "group has no container")
        if group.container is not None and group.container.iommu_driver is None:
            raise KernelError(
                errno.EINVAL, "container has no IOMMU set (VFIO_SET_IOMMU)"
            )
        if group.noiommu and not caller.capable(CAP_SYS_RAWIO):
            raise KernelError(errno.EPERM, "noiommu device needs CAP_SYS_RAWIO")
        return vdev

    def get_device_fd(self, caller: Caller, name: str) -> VfioDeviceFile:
        """``vfio_device_open_file``: open device ``name`` through this group (what
        ``vfiofs run`` installs as the new fd of VFIO_GROUP_GET_DEVICE_FD)."""
        vdev = self.find_device(caller, name)
        idev = None
        ictx = self.group.iommufd
        if ictx is not None and not vdev.noiommu:
            # compat: the device joins the iommufd and its compat IOAS (vfio/iommufd.c)
            ioas = compat_ioas(ictx)
            idev = iommufd_device_bind(ictx, vdev.iommu_group, vdev.dev)
            try:
                iommufd_device_attach(idev, ioas.id)
            except KernelError:
                iommufd_device_unbind(idev)
                raise
        try:
            df = vfio_allocate_device_file(vdev, group_file=self, idev=idev)
            vdev.open()
        except KernelError:
            if idev is not None:
                iommufd_device_unbind(idev)
            raise
        self.refs += 1
        if vdev.noiommu:
            log.warning(
                "%s: noiommu device opened; the kernel would taint itself", vdev.name
            )
        return df


@attrs.define(eq=False)
class VfioContainer:
    """``struct vfio_container``: an open ``/dev/vfio/vfio``.

    It holds groups and, after VFIO_SET_IOMMU, one IOMMU backend picked among
    ``iommu_drivers``. When the last group leaves, the backend goes with its mappings;
    closing the fd does not detach groups.
    """

    fops: FileOperations[VfioContainer]
    options: VfioOptions
    iommu_drivers: Sequence[VfioIommuDriverOps]
    groups: list[VfioGroup] = attrs.Factory(list)
    iommu_driver: VfioIommuDriver | None = None
    noiommu: bool = False

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        return self.fops.unlocked_ioctl(self, caller, cmd, arg)

    def ioctl_name(self, cmd: int) -> str | None:
        return self.fops.ioctl_name(self, cmd)

    def release(self) -> None:
        """Closing the fd does not detach groups; the container lives on with them."""

    def attach_group(self, group: VfioGroup, caller: Caller) -> None:
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

    def detach_group(self, group: VfioGroup) -> None:
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


@attrs.define(eq=False)
class VfioDeviceFile:
    """``struct vfio_device_file``: an open device fd, from the group path
    (``group_file`` set) or the cdev (``cdev``; no access until BIND_IOMMUFD)."""

    device: VfioDevice
    fops: FileOperations[VfioDeviceFile]
    group_file: VfioGroupFile | None = None
    cdev: bool = False  # opened from /dev/vfio/devices/vfioX
    access_granted: bool = True
    closed: bool = False
    idev: IommufdDevice | None = None  # bound iommufd DEVICE (cdev, or compat group)

    def _check(self) -> None:
        if self.closed or self.device.removing:
            raise KernelError(errno.ENODEV, f"{self.device.name} is gone")

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        self._check()
        return self.fops.unlocked_ioctl(self, caller, cmd, arg)

    def ioctl_name(self, cmd: int) -> str | None:
        return self.fops.ioctl_name(self, cmd)

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        self._check()
        if not self.access_granted:
            raise KernelError(errno.EINVAL, "device fd not bound to an iommufd")
        return self.device.ops.read(self, caller, offset, size)

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        self._check()
        if not self.access_granted:
            raise KernelError(errno.EINVAL, "device fd not bound to an iommufd")
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
            iommufd_device_unbind(self.idev)
            self.idev = None
            if self.cdev and self.device.group is not None:
                self.device.group.cdev_bound -= 1
        if self.group_file is not None:
            self.group_file.put()


def vfio_allocate_device_file(
    device: VfioDevice,
    *,
    group_file: VfioGroupFile | None = None,
    cdev: bool = False,
    idev: IommufdDevice | None = None,
) -> VfioDeviceFile:
    """``vfio_allocate_device_file``: a device fd with the device's file operations.
    A cdev fd starts without access (BIND_IOMMUFD grants it). ENODEV when the device is
    not registered (``vfio_device_try_get_registration``)."""
    if device.fops is None or not device.registered or device.removing:
        raise KernelError(errno.ENODEV, f"{device.name} is gone")
    return VfioDeviceFile(
        device,
        device.fops,
        group_file=group_file,
        cdev=cdev,
        access_granted=not cdev,
        idev=idev,
    )
