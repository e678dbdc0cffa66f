"""dev/ and sys/ as the kernel's Kconfig switches and hot-plug shape them (no mount)."""

from __future__ import annotations

import pytest

from vfiofs.config import default_topology, parse_topology
from vfiofs.errors import KernelError
from vfiofs.fs.node import Directory
from vfiofs.machine import Machine


def tree(**options: bool) -> Directory:
    text = "[options]\n" + "".join(
        f"{k} = {str(v).lower()}\n" for k, v in options.items()
    )
    body = open_default().split("[[group]]", 1)[1]
    m = Machine(parse_topology(text + "[[group]]" + body))
    return m.tree.root


def open_default() -> str:
    from importlib import resources

    return resources.files("vfiofs").joinpath("default_topology.toml").read_text()


def names(root: Directory, path: str) -> list[str]:
    node = root.walk(path)
    assert isinstance(node, Directory)
    return sorted(node.children)


def exists(root: Directory, path: str) -> bool:
    try:
        root.walk(path)
    except KernelError:
        return False
    return True


def test_default_tree() -> None:
    root = tree()
    assert names(root, "dev") == ["iommu", "vfio"]
    assert names(root, "dev/vfio") == ["0", "1", "devices", "noiommu-2", "vfio"]
    assert names(root, "dev/vfio/devices") == ["vfio0", "vfio1", "vfio2"]
    assert exists(root, "sys/devices/pci0000:00/0000:00:04.0/vfio-dev/vfio0/dev")


def test_device_cdev_off_removes_every_vfiox() -> None:
    root = tree(device_cdev=False)
    assert not exists(root, "dev/vfio/devices")
    assert not exists(root, "sys/devices/pci0000:00/0000:00:04.0/vfio-dev")
    assert names(root, "sys/class/vfio-dev") == []
    assert exists(root, "dev/iommu")


def test_iommufd_off_means_no_dev_iommu_and_no_cdev() -> None:
    root = tree(iommufd=False)
    assert names(root, "dev") == ["vfio"]
    assert not exists(root, "dev/vfio/devices")


def test_container_off_serves_dev_vfio_vfio_from_iommufd() -> None:
    m = Machine(
        parse_topology(open_default().replace("container = true", "container = false"))
    )
    node = m.tree.root.walk("dev/vfio/vfio")
    from vfiofs.iommufd.iommufd_private import IommufdCtx
    from vfiofs.uaccess import FakeCaller

    ctx = node.opener(FakeCaller(), 0)  # type: ignore[attr-defined]
    assert isinstance(ctx, IommufdCtx)
    assert ctx.account_mm  # per-process accounting, as the kernel's compat misc device


def test_container_and_iommufd_off_leave_no_container_node() -> None:
    root = tree(container=False, iommufd=False)
    assert names(root, "dev/vfio") == ["0", "1", "noiommu-2"]


def test_noiommu_off_does_not_register_noiommu_devices() -> None:
    root = tree(noiommu=False)
    assert "noiommu-2" not in names(root, "dev/vfio")
    assert "0000:00:06.0" not in names(root, "sys/bus/pci/devices")


@pytest.mark.parametrize("bdf", ["0000:00:04.0", "0000:00:05.0"])
def test_hot_remove_reuses_the_cdev_number(bdf: str) -> None:
    m = Machine(default_topology())
    spec = next(d for d in default_topology().devices() if d.bdf == bdf)
    index = m.vdevs[bdf].index
    m.remove_device(bdf)
    root = m.tree.root
    assert f"vfio{index}" not in names(root, "dev/vfio/devices")
    assert bdf not in names(root, "sys/bus/pci/devices")
    group = m.iommu_groups.groups[0 if bdf.endswith("04.0") else 1]
    m.add_device(spec, group)
    assert m.vdevs[bdf].index == index  # the ida hands out the lowest free number
    assert f"vfio{index}" in names(root, "dev/vfio/devices")


def test_hot_remove_while_open_gives_enodev_until_closed() -> None:
    import errno

    from vfiofs.abi import vfio as V
    from vfiofs.uaccess import FakeCaller

    m = Machine(default_topology())
    c = FakeCaller()
    df = m.tree.root.walk("dev/vfio/devices/vfio0").opener(c, 0)  # type: ignore[attr-defined]
    m.remove_device("0000:00:04.0")
    with pytest.raises(KernelError) as e:
        df.ioctl(c, V.VFIO_DEVICE_GET_INFO, 0)
    assert e.value.errno == errno.ENODEV
    df.release()
    assert "0" not in names(m.tree.root, "dev/vfio")
