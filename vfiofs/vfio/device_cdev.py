"""Mirror of drivers/vfio/device_cdev.c: ``/dev/vfio/devices/vfioX``.

A cdev fd can do nothing until VFIO_DEVICE_BIND_IOMMUFD binds it to an iommufd (every
other ioctl, read and write: EINVAL). Binding claims the device's IOMMU group for that
iommufd and opens the device; ATTACH / DETACH_IOMMUFD_PT move its DMA between IOASes and
HWPTs. The group path and the cdev path exclude each other (EBUSY both ways). The
handlers run from vfio_main.py's device-fd tables, which decode and size-check their
structs.
"""

from __future__ import annotations

import errno

from ..abi import vfio as V
from ..errors import KernelError
from ..ioctl_table import Ucmd
from ..iommufd.device import (
    iommufd_device_attach,
    iommufd_device_bind,
    iommufd_device_detach,
    iommufd_device_unbind,
)
from ..iommufd.iommufd_private import IommufdCtx
from ..uaccess import Caller, OurFile
from .vfio import VfioDevice, VfioDeviceFile, vfio_allocate_device_file


def vfio_device_fops_cdev_open(
    vdev: VfioDevice, caller: Caller, flags: int
) -> VfioDeviceFile:
    """open(): no ownership check yet; ENODEV while the device is going away."""
    return vfio_allocate_device_file(vdev, cdev=True)


def vfio_df_ioctl_bind_iommufd(df: VfioDeviceFile, ucmd: Ucmd) -> int:
    """Bind a cdev fd to an iommufd: claim the group, open the device, report devid."""
    bind: V.VfioDeviceBindIommufd = ucmd.cmd
    caller = ucmd.caller
    if bind.iommufd < 0 or bind.flags & ~V.VFIO_DEVICE_BIND_FLAG_TOKEN:
        raise KernelError(errno.EINVAL, "iommufd < 0 or unknown flags")
    if not df.cdev:  # kernel: BIND_IOMMUFD only allowed for cdev fds
        raise KernelError(errno.EINVAL, "BIND_IOMMUFD on a group-path device fd")
    vdev = df.device
    group = vdev.group
    assert group is not None  # registered devices have a group
    if group.opened_file is not None:  # vfio_device_block_group()
        raise KernelError(errno.EBUSY, f"group {group.name} is open")
    if df.idev is not None:
        raise KernelError(errno.EINVAL, "already bound")
    if bind.flags & V.VFIO_DEVICE_BIND_FLAG_TOKEN:
        raise KernelError(errno.EINVAL, "the device takes no VF token")
    ref = caller.fget(bind.iommufd)
    if not isinstance(ref, OurFile) or not isinstance(ref.handle, IommufdCtx):
        raise KernelError(errno.EBADFD, f"fd {bind.iommufd} is not an iommufd")
    if vdev.open_count:
        raise KernelError(errno.EINVAL, "device already open through another fd")
    idev = iommufd_device_bind(ref.handle, vdev.iommu_group, vdev.dev)  # EPERM/EBUSY
    try:
        vdev.open()
    except KernelError:
        iommufd_device_unbind(idev)
        raise
    df.idev = idev
    group.cdev_bound += 1
    ucmd.copy_to(
        V.VfioDeviceBindIommufd.offsetof("out_devid"), idev.id.to_bytes(4, "little")
    )
    df.access_granted = True
    return 0


def vfio_df_ioctl_attach_pt(df: VfioDeviceFile, ucmd: Ucmd) -> int:
    """Attach the device's DMA (or one PASID of it) to an IOAS or HWPT; ``pt_id``
    returns the HWPT used."""
    at: V.VfioDeviceAttachIommufdPt = ucmd.cmd
    pasid = _pasid(df, ucmd, at.flags, V.VfioDeviceAttachIommufdPt)
    assert df.idev is not None  # access_granted: bound
    pt_id = iommufd_device_attach(df.idev, at.pt_id, pasid)
    ucmd.copy_to(
        V.VfioDeviceAttachIommufdPt.offsetof("pt_id"), pt_id.to_bytes(4, "little")
    )
    return 0


def vfio_df_ioctl_detach_pt(df: VfioDeviceFile, ucmd: Ucmd) -> int:
    """Back to blocked DMA (for the whole device, or one PASID)."""
    dt: V.VfioDeviceDetachIommufdPt = ucmd.cmd
    pasid = _pasid(df, ucmd, dt.flags, V.VfioDeviceDetachIommufdPt)
    assert df.idev is not None  # access_granted: bound
    iommufd_device_detach(df.idev, pasid)
    return 0


def _pasid(
    df: VfioDeviceFile,
    ucmd: Ucmd,
    flags: int,
    st: type[V.VfioDeviceAttachIommufdPt | V.VfioDeviceDetachIommufdPt],
) -> int:
    """The PASID of an ATTACH/DETACH_IOMMUFD_PT, IOMMU_NO_PASID (0) without the PASID
    flag: EINVAL for unknown flags, EOPNOTSUPP for a device without PASIDs (its
    ``pasid`` topology key), EINVAL for an argsz that does not reach ``pasid`` (the
    ``xend`` the kernel copies only when the flag asks)."""
    if flags & ~V.VFIO_DEVICE_ATTACH_PASID:
        raise KernelError(errno.EINVAL, "unknown flags")
    if not flags & V.VFIO_DEVICE_ATTACH_PASID:
        return 0
    assert df.idev is not None
    if not df.idev.driver.max_pasid_log2(df.device.dev):
        raise KernelError(errno.EOPNOTSUPP, "the device has no PASID capability")
    at = st.offsetof("pasid")
    if ucmd.argsz < at + 4:
        raise KernelError(errno.EINVAL, f"argsz {ucmd.argsz} does not reach pasid")
    return int.from_bytes(ucmd.caller.copy_from_user(ucmd.arg + at, 4), "little")
