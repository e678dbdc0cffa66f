"""Mirror of drivers/vfio/group.c: the ioctls of ``/dev/vfio/$GROUP`` (``noiommu-$N``).

A group fd attaches the group to a container (SET_CONTAINER), reports viability
(GET_STATUS) and hands out device fds (GET_DEVICE_FD, which a FUSE reply cannot do: see
``vfiofs run``). The group structs, their open and release, and the device open are in
vfio.py.
"""

from __future__ import annotations

import errno
import logging
import struct

from ..abi import vfio as V
from ..errors import KernelError
from ..ioctl_table import ArgKind, FileOperations, IoctlOp, IoctlTable, Ucmd
from ..iommufd.ioas import iommufd_ioas_alloc
from ..iommufd.iommufd_private import IommufdCtx
from ..uaccess import CAP_SYS_RAWIO, OurFile, strndup_user
from .vfio import VfioContainer, VfioGroupFile

log = logging.getLogger("vfiofs.vfio")


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
    fd = struct.unpack("<i", ucmd.caller.copy_from_user(ucmd.arg, 4))[0]
    ref = ucmd.caller.fget(fd)
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
    # A FUSE reply cannot create a file descriptor in the caller: `vfiofs run` traps
    # this ioctl and installs the fd (session/run.py).
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


def vfio_group_fops_ioctl_name(gf: VfioGroupFile, cmd: int) -> str | None:
    return IOCTLS.name(cmd)


VFIO_GROUP_FOPS: FileOperations[VfioGroupFile] = FileOperations(
    IOCTLS.dispatch, vfio_group_fops_ioctl_name
)
