"""Mirror of drivers/vfio/group.c: ``/dev/vfio/$GROUP`` (``noiommu-$N``).

A group file is opened by one user at a time (EBUSY). It attaches the group to a
container (SET_CONTAINER), reports viability (GET_STATUS) and hands out device fds
(GET_DEVICE_FD). Device fds hold a reference on the group file, so the group is detached
from its container only when the group fd *and* every device fd are closed.
"""

from __future__ import annotations

import errno
import logging
import struct
from typing import Any

import attrs

from ..abi import vfio as V
from ..errors import KernelError
from ..ioctl_table import ArgKind, IoctlOp, IoctlTable, Ucmd
from ..iommu.group import IommuGroup
from ..uaccess import CAP_SYS_RAWIO, Caller, OurFile, strndup_user
from .vfio_main import VfioCore, VfioDevice, VfioDeviceFile

log = logging.getLogger("vfiofs.vfio")


@attrs.define(eq=False)
class VfioGroup:
    """``struct vfio_group``."""

    core: VfioCore
    iommu_group: IommuGroup
    devices: list[VfioDevice] = attrs.Factory(list)
    container: Any = None  # VfioContainer
    iommufd: Any = None  # an IommufdCtx used as the container (compat)
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
        self.opened_file = VfioGroupFile(self)
        return self.opened_file


@attrs.define(eq=False)
class VfioGroupFile:
    """An open group fd. ``refs`` counts the fd itself plus its device fds."""

    group: VfioGroup
    refs: int = 1

    def ioctl_name(self, cmd: int) -> str | None:
        return IOCTLS.name(cmd)

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        return IOCTLS.dispatch(self, caller, cmd, arg)

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

    # --- GET_DEVICE_FD -----------------------------------------------------------------

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
        """Open device ``name`` through this group (what ``vfiofs run`` installs as the
        new fd of VFIO_GROUP_GET_DEVICE_FD)."""
        vdev = self.find_device(caller, name)
        idev = None
        ictx = self.group.iommufd
        if ictx is not None and not vdev.noiommu:
            # compat: the device joins the iommufd and its compat IOAS (vfio/iommufd.c)
            from ..iommufd.device import (
                iommufd_device_attach,
                iommufd_device_bind,
                iommufd_device_unbind,
            )
            from ..iommufd.vfio_compat import compat_ioas

            ioas = compat_ioas(ictx)
            idev = iommufd_device_bind(ictx, vdev.iommu_group, vdev.dev)
            try:
                iommufd_device_attach(idev, ioas.id)
            except KernelError:
                iommufd_device_unbind(idev)
                raise
        try:
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
        return VfioDeviceFile(vdev, group_file=self, idev=idev)


def vfio_group_ioctl_get_status(gf: VfioGroupFile, ucmd: Ucmd) -> int:
    group = gf.group
    if group.removed:
        raise KernelError(errno.ENODEV)
    if group.container is not None or group.iommufd is not None:
        flags = V.VFIO_GROUP_FLAGS_CONTAINER_SET | V.VFIO_GROUP_FLAGS_VIABLE
    elif group.iommu_group.owner is None and group.iommu_group.viable():
        flags = V.VFIO_GROUP_FLAGS_VIABLE
    else:
        flags = 0
    ucmd.respond(V.VfioGroupStatus(ucmd.argsz, flags), limit=V.VfioGroupStatus.SIZE)
    return 0


def vfio_group_ioctl_set_container(gf: VfioGroupFile, ucmd: Ucmd) -> int:
    from .container import VfioContainer

    fd = struct.unpack("<i", ucmd.caller.copy_from_user(ucmd.arg, 4))[0]
    ref = ucmd.caller.fget(fd)
    from ..iommufd.iommufd_private import IommufdCtx

    group = gf.group
    if group.container is not None or group.iommufd is not None:
        raise KernelError(errno.EINVAL, "group already has a container")
    if group.removed:
        raise KernelError(errno.ENODEV)
    handle = ref.handle if isinstance(ref, OurFile) else None
    if isinstance(handle, VfioContainer):
        handle.attach_group(group, ucmd.caller)
        return 0
    if isinstance(handle, IommufdCtx):
        # vfio/iommufd.c: a normal group gets the compat IOAS; noiommu switches the ctx
        if group.noiommu:
            if not ucmd.caller.capable(CAP_SYS_RAWIO):
                raise KernelError(errno.EPERM, "noiommu needs CAP_SYS_RAWIO")
            handle.no_iommu_mode = True
        elif handle.compat_ioas is None:
            from ..iommufd.ioas import iommufd_ioas_alloc

            handle.compat_ioas = iommufd_ioas_alloc(handle)
        group.iommufd = handle
        return 0
    raise KernelError(
        errno.EBADFD, f"fd {fd} is neither a VFIO container nor an iommufd"
    )


def vfio_group_ioctl_unset_container(gf: VfioGroupFile, ucmd: Ucmd) -> int:
    group = gf.group
    if group.container is None and group.iommufd is None:
        raise KernelError(errno.EINVAL, "group has no container")
    if gf.refs != 1:
        raise KernelError(errno.EBUSY, "device fds are still open")
    if group.container is not None:
        group.container.detach_group(group)
    group.iommufd = None
    return 0


def vfio_group_ioctl_get_device_fd(gf: VfioGroupFile, ucmd: Ucmd) -> int:
    name = strndup_user(ucmd.caller, ucmd.arg).decode(errors="replace")
    vdev = gf.find_device(ucmd.caller, name)
    # A FUSE reply cannot create a file descriptor in the caller (design.md §6).
    where = f"/dev/vfio/devices/vfio{vdev.index}" if vdev.index is not None else None
    log.warning(
        "VFIO_GROUP_GET_DEVICE_FD(%s) needs `vfiofs run` (it installs the fd with seccomp)%s",
        name,
        f"; or open the cdev {where} and bind it to /dev/iommu" if where else "",
    )
    raise KernelError(errno.EOPNOTSUPP, "GET_DEVICE_FD outside vfiofs run")


IOCTLS: IoctlTable[VfioGroupFile] = IoctlTable(
    [
        IoctlOp(
            V.VFIO_GROUP_GET_DEVICE_FD,
            "VFIO_GROUP_GET_DEVICE_FD",
            vfio_group_ioctl_get_device_fd,
            ArgKind.PTR,
        ),
        IoctlOp(
            V.VFIO_GROUP_GET_STATUS,
            "VFIO_GROUP_GET_STATUS",
            vfio_group_ioctl_get_status,
            ArgKind.ARGSZ,
            V.VfioGroupStatus,
            "flags",
        ),
        IoctlOp(
            V.VFIO_GROUP_SET_CONTAINER,
            "VFIO_GROUP_SET_CONTAINER",
            vfio_group_ioctl_set_container,
            ArgKind.PTR,
        ),
        IoctlOp(
            V.VFIO_GROUP_UNSET_CONTAINER,
            "VFIO_GROUP_UNSET_CONTAINER",
            vfio_group_ioctl_unset_container,
        ),
    ]
)
