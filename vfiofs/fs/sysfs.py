"""The mirrored sysfs: ``sys/bus/pci/devices/<BDF>``, ``sys/kernel/iommu_groups/<N>``,
``sys/class/vfio-dev``, ``sys/class/vfio``, ``sys/module/vfio*``, in the kernel's formats
(drivers/pci/pci-sysfs.c, drivers/iommu/iommu.c, drivers/vfio/). Values that live in config
space are read from it at open time, so sysfs always agrees with the device.

Layout: device directories live under ``sys/devices/pci0000:00/<BDF>`` and everything else
links there with relative symlinks, as on a real system, so tools that ``readlink`` and take
the basename, and tools that follow the links, both work inside the mirrored tree.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from typing import Protocol

from .node import Attribute, Directory, Symlink, text

PCI_ROOT = "pci0000:00"
VFIO_GROUP_MAJOR = 243  # dynamic in the kernel ("vfio" in /proc/devices)
VFIO_DEV_MAJOR = 511  # dynamic in the kernel ("vfio-dev"); vfio.rst shows 511
MISC_MAJOR = 10
VFIO_MINOR = 196
IOMMU_MISC_MINOR = 123  # dynamic misc minor

IORESOURCE_IO = 0x100
IORESOURCE_MEM = 0x200
IORESOURCE_PREFETCH = 0x2000
IORESOURCE_READONLY = 0x4000
IORESOURCE_SIZEALIGN = 0x40000
IORESOURCE_MEM_64 = 0x100000


class SysfsBar(Protocol):
    index: int
    size: int
    is_io: bool
    is_64: bool
    prefetch: bool


class SysfsPciDevice(Protocol):
    """What sysfs needs from a simulated PCI device."""

    bdf: str

    def config_read(self, offset: int, size: int) -> bytes: ...

    @property
    def config_size(self) -> int: ...

    @property
    def driver(self) -> str | None: ...


def _cfg(dev: SysfsPciDevice, off: int, size: int) -> int:
    return int.from_bytes(dev.config_read(off, size), "little")


def _mode(perm: int) -> int:
    return stat.S_IFREG | perm


def resource_text(bars: list[tuple[int, int, int]]) -> bytes:
    """The ``resource`` file: one line per slot (6 BARs, ROM, 6 SR-IOV BARs)."""
    lines = []
    for start, size, flags in bars + [(0, 0, 0)] * (13 - len(bars)):
        end = start + size - 1 if size else 0
        lines.append(f"0x{start:016x} 0x{end:016x} 0x{flags:016x}\n")
    return "".join(lines).encode()


def modalias(dev: SysfsPciDevice) -> str:
    cls = _cfg(dev, 0x09, 3)
    ids = f"v{_cfg(dev, 0, 2):08X}d{_cfg(dev, 2, 2):08X}sv{_cfg(dev, 0x2C, 2):08X}sd{_cfg(dev, 0x2E, 2):08X}"
    return f"pci:{ids}bc{cls >> 16:02X}sc{(cls >> 8) & 0xFF:02X}i{cls & 0xFF:02X}"


def populate_pci_device(
    d: Directory,
    dev: SysfsPciDevice,
    *,
    resources: Callable[[], list[tuple[int, int, int]]],
    irq: Callable[[], int],
    group_id: Callable[[], int | None],
    depth: str = "../../../",
) -> None:
    """Fill a device directory (``sys/devices/pci0000:00/<BDF>``)."""

    def hexattr(off: int, size: int, width: int) -> Callable[[], bytes]:
        return lambda: f"0x{_cfg(dev, off, size):0{width}x}\n".encode()

    d.add("vendor", Attribute(show=hexattr(0x00, 2, 4)))
    d.add("device", Attribute(show=hexattr(0x02, 2, 4)))
    d.add("subsystem_vendor", Attribute(show=hexattr(0x2C, 2, 4)))
    d.add("subsystem_device", Attribute(show=hexattr(0x2E, 2, 4)))
    d.add("revision", Attribute(show=hexattr(0x08, 1, 2)))
    d.add("class", Attribute(show=lambda: f"0x{_cfg(dev, 0x09, 3):06x}\n".encode()))
    d.add("irq", Attribute(show=lambda: f"{irq()}\n".encode()))
    d.add("numa_node", Attribute(mode=_mode(0o644), show=text("-1"), store=_refuse))
    d.add("modalias", Attribute(show=text(lambda: modalias(dev))))
    d.add("enable", Attribute(mode=_mode(0o600), show=text("1"), store=_refuse))
    d.add("dma_mask_bits", Attribute(show=text("64")))
    d.add("consistent_dma_mask_bits", Attribute(show=text("64")))
    d.add("local_cpulist", Attribute(show=text("0-1")))
    d.add(
        "driver_override",
        Attribute(
            mode=_mode(0o644), show=text(lambda: dev.driver or "(null)"), store=_refuse
        ),
    )
    d.add("resource", Attribute(show=lambda: resource_text(resources())))
    d.add(
        "config",
        Attribute(
            mode=_mode(0o644),
            bin_size=dev.config_size,
            read_at=lambda off, size: (
                dev.config_read(off, max(0, min(size, dev.config_size - off)))
                if off < dev.config_size
                else b""
            ),
        ),
    )

    def uevent() -> str:
        lines = []
        if dev.driver:
            lines.append(f"DRIVER={dev.driver}")
        lines += [
            f"PCI_CLASS={_cfg(dev, 0x09, 3):04X}",
            f"PCI_ID={_cfg(dev, 0, 2):04X}:{_cfg(dev, 2, 2):04X}",
            f"PCI_SUBSYS_ID={_cfg(dev, 0x2C, 2):04X}:{_cfg(dev, 0x2E, 2):04X}",
            f"PCI_SLOT_NAME={dev.bdf}",
            f"MODALIAS={modalias(dev)}",
        ]
        return "\n".join(lines)

    d.add("uevent", Attribute(mode=_mode(0o644), show=text(uevent), store=_refuse))
    d.add("subsystem", Symlink(target=f"{depth}bus/pci"))
    if dev.driver:
        d.add("driver", Symlink(target=f"{depth}bus/pci/drivers/{dev.driver}"))
    gid = group_id()
    if gid is not None:
        d.add("iommu_group", Symlink(target=f"{depth}kernel/iommu_groups/{gid}"))


def _refuse(data: bytes) -> None:
    """Writes accepted and ignored (the emulated device has no such knob)."""


def populate_iommu_group(
    g: Directory,
    group_id: int,
    *,
    name: str | None,
    reserved: Callable[[], list[tuple[int, int, str]]],
) -> Directory:
    """Fill ``sys/kernel/iommu_groups/<N>``; returns its ``devices`` directory."""
    g.add(
        "type",
        Attribute(
            mode=_mode(0o644),
            show=text("DMA" if name is None else "unknown"),
            store=_refuse,
        ),
    )
    g.add(
        "reserved_regions",
        Attribute(
            show=lambda: "".join(
                f"0x{s:016x} 0x{e:016x} {t}\n" for s, e, t in reserved()
            ).encode()
        ),
    )
    if name is not None:
        g.add("name", Attribute(show=text(name)))
    return g.mkdir("devices")


def populate_modules(
    sys_dir: Directory, params: dict[str, dict[str, Callable[[], str]]]
) -> None:
    """``sys/module/<mod>/parameters/<p>`` (read-only views of the daemon's options)."""
    module = sys_dir.mkdir("module")
    for mod, values in params.items():
        p = module.mkdir(mod).mkdir("parameters")
        for key, show in values.items():
            p.add(key, Attribute(mode=_mode(0o444), show=text(show)))
