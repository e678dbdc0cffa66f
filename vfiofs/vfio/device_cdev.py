"""Mirror of drivers/vfio/device_cdev.c: ``/dev/vfio/devices/vfioX``.

A cdev fd can do nothing until VFIO_DEVICE_BIND_IOMMUFD binds it to an iommufd (every
other ioctl, read and write: EINVAL). Binding claims the device's IOMMU group for that
iommufd and opens the device; ATTACH / DETACH_IOMMUFD_PT move its DMA between IOASes and
HWPTs. The group path and the cdev path exclude each other (EBUSY both ways).
"""

from __future__ import annotations

import errno

from ..abi import vfio as V
from ..errors import KernelError
from ..ioctl_table import copy_struct_from_user
from ..iommufd.device import (
    iommufd_device_attach,
    iommufd_device_bind,
    iommufd_device_detach,
)
from ..iommufd.iommufd_private import IommufdCtx
from ..uaccess import Caller, OurFile
from .vfio_main import VfioDevice, VfioDeviceFile

BIND_MINSZ = V.VfioDeviceBindIommufd.offsetofend("out_devid")  # 16


def vfio_device_fops_cdev_open(
    vdev: VfioDevice, caller: Caller, flags: int
) -> VfioDeviceFile:
    """open(): no ownership check yet; ENODEV while the device is going away."""
    if vdev.removing or not vdev.registered:
        raise KernelError(errno.ENODEV, f"{vdev.name} is gone")
    return VfioDeviceFile(vdev, cdev=True, access_granted=False)


def vfio_df_ioctl_bind_iommufd(df: VfioDeviceFile, caller: Caller, arg: int) -> int:
    raw = caller.copy_from_user(arg, 4)
    argsz = int.from_bytes(raw, "little")
    if argsz < BIND_MINSZ:
        raise KernelError(errno.EINVAL, f"argsz {argsz}")
    bind = copy_struct_from_user(caller, V.VfioDeviceBindIommufd, arg, argsz)  # E2BIG
    if bind.iommufd < 0 or bind.flags & ~V.VFIO_DEVICE_BIND_FLAG_TOKEN:
        raise KernelError(errno.EINVAL, "iommufd < 0 or unknown flags")
    vdev = df.device
    if vdev.group.opened_file is not None:
        raise KernelError(errno.EBUSY, f"group {vdev.group.name} is open")
    if df.idev is not None:
        raise KernelError(errno.EINVAL, "already bound")
    if bind.flags & V.VFIO_DEVICE_BIND_FLAG_TOKEN:
        raise KernelError(errno.EINVAL, "the device takes no VF token")
    ref = caller.fget(bind.iommufd)
    if not isinstance(ref, OurFile) or not isinstance(ref.handle, IommufdCtx):
        raise KernelError(errno.EBADFD, f"fd {bind.iommufd} is not an iommufd")
    if vdev.open_count:
        raise KernelError(errno.EINVAL, "device already open through another fd")
    ictx = ref.handle
    idev = iommufd_device_bind(ictx, vdev.iommu_group, vdev.dev)  # EPERM / EBUSY
    try:
        vdev.open()
    except KernelError:
        from ..iommufd.device import iommufd_device_unbind

        iommufd_device_unbind(idev)
        raise
    df.idev = idev
    vdev.group.cdev_bound += 1
    caller.copy_to_user(arg + 12, idev.id.to_bytes(4, "little"))
    df.access_granted = True
    return 0


def vfio_df_ioctl_attach_pt(df: VfioDeviceFile, caller: Caller, arg: int) -> int:
    minsz = V.VfioDeviceAttachIommufdPt.offsetofend("pt_id")
    raw = caller.copy_from_user(arg, minsz)
    at = V.VfioDeviceAttachIommufdPt.unpack_from(raw + bytes(4))
    if at.argsz < minsz or at.flags & ~V.VFIO_DEVICE_ATTACH_PASID:
        raise KernelError(errno.EINVAL, "argsz or flags")
    if at.flags & V.VFIO_DEVICE_ATTACH_PASID:
        raise KernelError(errno.EOPNOTSUPP, "no PASID support")
    assert df.idev is not None
    pt_id = iommufd_device_attach(df.idev, at.pt_id)
    caller.copy_to_user(arg + 8, pt_id.to_bytes(4, "little"))
    return 0


def vfio_df_ioctl_detach_pt(df: VfioDeviceFile, caller: Caller, arg: int) -> int:
    minsz = V.VfioDeviceDetachIommufdPt.offsetofend("flags")
    raw = caller.copy_from_user(arg, minsz)
    argsz, flags = int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:8], "little")
    if argsz < minsz or flags & ~V.VFIO_DEVICE_ATTACH_PASID:
        raise KernelError(errno.EINVAL, "argsz or flags")
    if flags & V.VFIO_DEVICE_ATTACH_PASID:
        raise KernelError(errno.EOPNOTSUPP, "no PASID support")
    assert df.idev is not None
    iommufd_device_detach(df.idev)
    return 0
