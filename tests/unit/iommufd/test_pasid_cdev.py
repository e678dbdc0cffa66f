"""PASID attach, replace and detach through the VFIO cdev (VFIO_DEVICE_ATTACH_PASID)
for a device whose topology declares a PASID width."""

from __future__ import annotations

import errno

from vfiofs.abi import iommufd as I, vfio as V

from .conftest import Env, err


def test_cdev_pasid_attach_replace_detach(env: Env) -> None:
    i = env.ioas()
    df, dev = env.bind_pci(0)  # pasid = 20 in the topology
    _, pasid_hwpt = env.hwpt(dev, i, I.IOMMU_HWPT_ALLOC_PASID)
    _, other = env.hwpt(dev, i, I.IOMMU_HWPT_ALLOC_PASID)
    _, plain = env.hwpt(dev, i)
    c = env.c

    def attach(pt: int, pasid: int, argsz: int = 16) -> int:
        st = V.VfioDeviceAttachIommufdPt(argsz, V.VFIO_DEVICE_ATTACH_PASID, pt, pasid)
        return err(df.ioctl, c, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, c.alloc(st.pack()))

    assert attach(plain, 3) == -errno.EINVAL  # not allocated with ALLOC_PASID
    assert attach(pasid_hwpt, 3, argsz=12) == -errno.EINVAL  # argsz misses pasid
    assert attach(pasid_hwpt, 1 << 20) == -errno.EINVAL  # beyond the width
    assert env.attach_pci(df, pasid_hwpt, pasid=3) == pasid_hwpt
    assert env.attach_pci(df, other, pasid=3) == other  # replace
    idev = env.ctx.objects[dev]
    assert idev.attached[3].id == other  # type: ignore[attr-defined]
    # the whole device on a HWPT that is not PASID-capable: EINVAL while PASIDs are on
    st = V.VfioDeviceAttachIommufdPt(16, 0, plain, 0)
    assert (
        err(df.ioctl, c, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, c.alloc(st.pack()))
        == -errno.EINVAL
    )
    assert env.attach_pci(df, pasid_hwpt) == pasid_hwpt
    det = V.VfioDeviceDetachIommufdPt(12, V.VFIO_DEVICE_ATTACH_PASID, 3)
    df.ioctl(c, V.VFIO_DEVICE_DETACH_IOMMUFD_PT, c.alloc(det.pack()))
    assert 3 not in idev.attached  # type: ignore[attr-defined]
    env.ok(I.IOMMU_DESTROY, I.IommuDestroy(8, other))


def test_cdev_pasid_needs_a_pasid_capable_device(env: Env) -> None:
    i = env.ioas()
    df, dev = env.bind_pci(1)  # no pasid key
    _, h = env.hwpt(dev, i, I.IOMMU_HWPT_ALLOC_PASID)
    st = V.VfioDeviceAttachIommufdPt(16, V.VFIO_DEVICE_ATTACH_PASID, h, 3)
    assert (
        err(df.ioctl, env.c, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, env.c.alloc(st.pack()))
        == -errno.EOPNOTSUPP
    )
    det = V.VfioDeviceDetachIommufdPt(12, V.VFIO_DEVICE_ATTACH_PASID, 3)
    assert (
        err(df.ioctl, env.c, V.VFIO_DEVICE_DETACH_IOMMUFD_PT, env.c.alloc(det.pack()))
        == -errno.EOPNOTSUPP
    )
