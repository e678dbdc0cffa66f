"""Builds ``dev/`` and ``sys/`` from the vfio core and keeps them in step with hot-plug.

`VfioTree` is a `VfioCore` listener: a registered device gets its sysfs directory, its
``vfio-dev/vfioX`` entries and ``dev/vfio/devices/vfioX``; a new group gets
``dev/vfio/<name>``, ``sys/kernel/iommu_groups/<N>`` and its ``vfio`` class device.
Unregistering removes them again. Modes are those of a real system; the group files, cdevs
and dev/iommu belong to `owner` (root, or the user running the daemon).
"""

from __future__ import annotations

import functools
import stat
from collections.abc import Callable

import attrs

from ..devices.pci import PciDevice
from ..idr import ida_alloc_min
from ..iommu.group import IommuGroup
from ..iommufd.iommufd_private import IommufdCtx
from ..uaccess import Caller
from ..vfio.device_cdev import vfio_device_fops_cdev_open
from ..vfio.vfio import VfioDevice, VfioGroup
from ..vfio.vfio_main import VfioCore
from .node import Attribute, DeviceNode, Directory, Opener, OpenFile, Symlink, text
from .sysfs import (
    IOMMU_MISC_MINOR,
    IORESOURCE_IO,
    IORESOURCE_MEM,
    IORESOURCE_MEM_64,
    IORESOURCE_PREFETCH,
    IORESOURCE_SIZEALIGN,
    MISC_MAJOR,
    PCI_ROOT,
    VFIO_DEV_MAJOR,
    VFIO_GROUP_MAJOR,
    VFIO_MINOR,
    populate_iommu_group,
    populate_modules,
    populate_pci_device,
)


def _dev(mode: int, opener: Opener, owner: tuple[int, int] = (0, 0)) -> DeviceNode:
    return DeviceNode(
        mode=stat.S_IFREG | mode, opener=opener, uid=owner[0], gid=owner[1]
    )


@attrs.define(eq=False)
class VfioTree:
    """The dev/ and sys/ trees of one daemon."""

    root: Directory
    core: VfioCore
    iommufd_open: Callable[[Caller, int], IommufdCtx] | None = None  # with IOMMUFD
    # (uid, gid) of the group files, cdevs and dev/iommu (the container is root's 0666)
    owner: tuple[int, int] = (0, 0)
    group_minors: dict[str, int] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        r = self.root
        dev, sys_ = r.mkdir("dev"), r.mkdir("sys")
        vfio = dev.mkdir("vfio")
        opts = self.core.options
        if opts.container or self.iommufd_open is not None:
            # VFIO_CONTAINER off: iommufd provides /dev/vfio/vfio (per-process accounting)
            opener = (
                self.core.open_container if opts.container else self._compat_container
            )
            vfio.add("vfio", _dev(0o666, opener))
            misc = sys_.mkdir("class").mkdir("misc").mkdir("vfio")
            misc.add("dev", Attribute(show=text(f"{MISC_MAJOR}:{VFIO_MINOR}")))
        if self.iommufd_open is not None:
            dev.add("iommu", _dev(0o660, self.iommufd_open, self.owner))
            sys_.mkdir("class").mkdir("misc").mkdir("iommu").add(
                "dev", Attribute(show=text(f"{MISC_MAJOR}:{IOMMU_MISC_MINOR}"))
            )
        if opts.device_cdev and opts.iommufd:
            vfio.mkdir("devices")
        sys_.mkdir("devices").mkdir(PCI_ROOT)
        sys_.mkdir("bus").mkdir("pci").mkdir("devices")
        sys_.mkdir("bus").mkdir("pci").mkdir("drivers").mkdir("vfio-pci")
        sys_.mkdir("kernel").mkdir("iommu_groups")
        sys_.mkdir("kernel").mkdir("debug").mkdir("vfiofs").mkdir("iommu_groups")
        sys_.mkdir("class").mkdir("vfio-dev")
        sys_.mkdir("class").mkdir("vfio")
        sys_.mkdir("devices").mkdir("virtual").mkdir("vfio")
        populate_modules(
            sys_,
            {
                "vfio": {"enable_unsafe_noiommu_mode": lambda: yn(opts.noiommu)},
                "vfio_iommu_type1": {
                    "dma_entry_limit": lambda: str(opts.dma_entry_limit),
                    "allow_unsafe_interrupts": lambda: "N",
                    "disable_hugepages": lambda: "N",
                },
                "vfio_pci": {"nointxmask": lambda: "N", "disable_idle_d3": lambda: "N"},
                **(
                    {"iommufd": {"allow_unsafe_interrupts": lambda: "N"}}
                    if opts.iommufd
                    else {}
                ),
            },
        )
        self.core.listeners.append(self)

    def _compat_container(self, caller: Caller, flags: int) -> OpenFile:
        assert self.iommufd_open is not None
        ctx = self.iommufd_open(caller, flags)
        ctx.account_mm = True
        return ctx

    def _sys(self, path: str) -> Directory:
        node = self.root.walk("sys/" + path)
        assert isinstance(node, Directory)
        return node

    # --- VfioListener --------------------------------------------------------------------

    def group_added(self, group: VfioGroup) -> None:
        minor = ida_alloc_min(set(self.group_minors.values()))
        self.group_minors[group.name] = minor
        vfio = self.root.walk("dev/vfio")
        assert isinstance(vfio, Directory)
        vfio.add(group.name, _dev(0o600, group.open, self.owner))
        ig = group.iommu_group
        gdir = self._sys("kernel/iommu_groups").mkdir(str(ig.id))
        populate_iommu_group(
            gdir, ig.id, name=ig.name, reserved=lambda: list(ig.reserved_regions)
        )
        cdev = self._sys("devices/virtual/vfio").mkdir(group.name)
        _chrdev_attrs(cdev, VFIO_GROUP_MAJOR, minor, f"vfio/{group.name}")
        self._sys("class/vfio").add(
            group.name, Symlink(target=f"../../devices/virtual/vfio/{group.name}")
        )
        # debugfs-style view of what the group's devices can reach (not in a real kernel)
        dbg = self._sys("kernel/debug/vfiofs/iommu_groups").mkdir(str(ig.id))
        dbg.add(
            "mappings",
            Attribute(
                mode=stat.S_IFREG | 0o400,
                show=lambda: _mappings_text(ig),
                uid=self.owner[0],
                gid=self.owner[1],
            ),
        )

    def group_removed(self, group: VfioGroup) -> None:
        self.group_minors.pop(group.name, None)
        vfio = self.root.walk("dev/vfio")
        assert isinstance(vfio, Directory)
        vfio.remove(group.name)
        self._sys("kernel/iommu_groups").remove(str(group.iommu_group.id))
        self._sys("devices/virtual/vfio").remove(group.name)
        self._sys("class/vfio").remove(group.name)
        self._sys("kernel/debug/vfiofs/iommu_groups").remove(str(group.iommu_group.id))

    def device_added(self, vdev: VfioDevice) -> None:
        pdev = vdev.dev
        bdf = vdev.name
        ddir = self._sys(f"devices/{PCI_ROOT}").mkdir(bdf)
        populate_pci_device(
            ddir,
            pdev,
            resources=lambda: _resources(pdev),
            irq=lambda: 0,
            group_id=lambda: vdev.iommu_group.id,
        )
        self._sys("bus/pci/devices").add(
            bdf, Symlink(target=f"../../../devices/{PCI_ROOT}/{bdf}")
        )
        if pdev.driver == "vfio-pci":
            self._sys("bus/pci/drivers/vfio-pci").add(
                bdf, Symlink(target=f"../../../../devices/{PCI_ROOT}/{bdf}")
            )
        gdev = self._sys(f"kernel/iommu_groups/{vdev.iommu_group.id}/devices")
        gdev.add(bdf, Symlink(target=f"../../../../devices/{PCI_ROOT}/{bdf}"))
        if vdev.index is None:
            return  # no cdev: noiommu (vfio.h), or cdev support off
        name = f"vfio{vdev.index}"
        vd = ddir.mkdir("vfio-dev").mkdir(name)
        _chrdev_attrs(vd, VFIO_DEV_MAJOR, vdev.index, f"vfio/devices/{name}")
        vd.add("device", Symlink(target=f"../../../{bdf}"))
        vd.add("subsystem", Symlink(target="../../../../../class/vfio-dev"))
        self._sys("class/vfio-dev").add(
            name, Symlink(target=f"../../devices/{PCI_ROOT}/{bdf}/vfio-dev/{name}")
        )
        devices = self.root.walk("dev/vfio/devices")
        assert isinstance(devices, Directory)
        devices.add(
            name,
            _dev(
                0o600,
                functools.partial(vfio_device_fops_cdev_open, vdev),
                self.owner,
            ),
        )

    def device_removed(self, vdev: VfioDevice) -> None:
        bdf = vdev.name
        self._sys(f"devices/{PCI_ROOT}").remove(bdf)
        self._sys("bus/pci/devices").remove(bdf)
        self._sys("bus/pci/drivers/vfio-pci").remove(bdf)
        gdev = self.root.walk(f"sys/kernel/iommu_groups/{vdev.iommu_group.id}/devices")
        assert isinstance(gdev, Directory)
        gdev.remove(bdf)
        if vdev.index is not None:
            name = f"vfio{vdev.index}"
            self._sys("class/vfio-dev").remove(name)
            devices = self.root.walk("dev/vfio/devices")
            assert isinstance(devices, Directory)
            devices.remove(name)


def _chrdev_attrs(d: Directory, major: int, minor: int, devname: str) -> None:
    """A character device's ``dev`` and ``uevent`` (writable, as sysfs has it)."""
    d.add("dev", Attribute(show=text(f"{major}:{minor}")))
    d.add(
        "uevent",
        Attribute(
            mode=stat.S_IFREG | 0o644,
            show=text(f"MAJOR={major}\nMINOR={minor}\nDEVNAME={devname}"),
            store=lambda b: None,
        ),
    )


def yn(flag: bool) -> str:
    """A bool module parameter as sysfs shows it."""
    return "Y" if flag else "N"


def _mappings_text(group: IommuGroup) -> bytes:
    """One line per mapping: ``iova-last pid:vaddr prot``."""
    if group.domain is None:
        return b""
    lines = []
    for m in group.domain.walk():
        owner = getattr(m.owner, "tgid", m.owner)
        prot = ("r" if m.prot & 1 else "-") + ("w" if m.prot & 2 else "-")
        lines.append(
            f"0x{m.iova:016x}-0x{m.iova + m.size - 1:016x} {owner}:0x{m.vaddr:x} {prot}\n"
        )
    return "".join(lines).encode()


def _resources(pdev: PciDevice) -> list[tuple[int, int, int]]:
    """``resource`` lines: BARs get made-up, naturally aligned host addresses."""
    out = []
    base = 0xFE000000
    for i in range(7):
        bar = pdev.bars.get(i)
        if bar is None:
            out.append((0, 0, 0))
            continue
        if bar.type == "io":
            flags = IORESOURCE_IO | IORESOURCE_SIZEALIGN | 0x1
            start = 0xC000 + 0x100 * i
        else:
            flags = IORESOURCE_MEM | IORESOURCE_SIZEALIGN
            if bar.is_64:
                flags |= IORESOURCE_MEM_64 | 0x4
            if bar.prefetch:
                flags |= IORESOURCE_PREFETCH | 0x8
            base = (base + bar.size - 1) // bar.size * bar.size
            start = base
            base += bar.size
        out.append((start, bar.size, flags))
    return out
