"""Mirror of drivers/vfio/pci/vfio_pci_core.c: vfio-pci's device ops over a simulated
`PciDevice` — GET_INFO, GET_REGION_INFO, GET_IRQ_INFO, SET_IRQS, RESET and the hot-reset
pair, plus pread/pwrite at the region offsets (index << 40), as vfio_pci_rdwr.c.

BARs are served by pread/pwrite; no region has the MMAP flag: stores through a mapping
never reach the daemon (docs/internals.md, platform facts), and a device model sees its
registers written only through pwrite.
"""

from __future__ import annotations

import errno
import struct

import attrs

from ...abi import vfio as V
from ...devices.pci import PciDevice
from ...errors import KernelError
from ...ioctl_table import ArgKind, IoctlOp, IoctlTable, Ucmd
from ...uaccess import Caller
from ..vfio import VfioDevice, VfioDeviceFile, VfioGroupFile
from .vfio_pci_intrs import IrqState, irq_count, vfio_pci_set_irqs

RW = V.VFIO_REGION_INFO_FLAG_READ | V.VFIO_REGION_INFO_FLAG_WRITE


@attrs.define(eq=False)
class VfioPciCoreDevice:
    """vfio-pci bound to one simulated device (``struct vfio_pci_core_device``)."""

    pdev: PciDevice
    irqs: IrqState = attrs.Factory(IrqState)

    def __attrs_post_init__(self) -> None:
        self.pdev.irq_sink = self.irqs.signal

    @property
    def name(self) -> str:
        return self.pdev.bdf

    def match(self, name: str) -> bool:
        """vfio_pci_core_match(): the BDF, optionally followed by ' vf_token=...'."""
        bdf, _, extra = name.partition(" ")
        if bdf != self.pdev.bdf:
            return False
        if extra and not extra.startswith("vf_token="):
            raise KernelError(errno.EINVAL, f"unknown device option {extra!r}")
        return True

    def open_device(self, vdev: VfioDevice) -> None:
        self.pdev.reset()

    def close_device(self, vdev: VfioDevice) -> None:
        """vfio_pci_core_close_device(): IRQs off, eventfds dropped, device reset."""
        self.irqs.close()
        self.pdev.reset()

    def ioctl_name(self, cmd: int) -> str | None:
        return IOCTLS.name(cmd)

    def ioctl(self, df: VfioDeviceFile, caller: Caller, cmd: int, arg: int) -> int:
        return IOCTLS.dispatch(self, caller, cmd, arg)

    # --- regions -------------------------------------------------------------------------

    def region(self, index: int) -> tuple[int, int]:
        """(size, flags) of region ``index``; size 0 for an absent region."""
        p = self.pdev
        if index <= V.VFIO_PCI_BAR5_REGION_INDEX:
            bar = p.bars.get(index)
            return (bar.size, RW) if bar is not None else (0, 0)
        if index == V.VFIO_PCI_CONFIG_REGION_INDEX:
            return p.config_size, RW
        return 0, 0  # ROM and VGA: the simulated devices have neither

    def read(self, df: VfioDeviceFile, caller: Caller, offset: int, size: int) -> bytes:
        index, off = V.VFIO_PCI_OFFSET_TO_INDEX(offset), offset & V.VFIO_PCI_OFFSET_MASK
        return self._rw(index, off, size, None)

    def write(
        self, df: VfioDeviceFile, caller: Caller, offset: int, data: bytes
    ) -> int:
        index, off = V.VFIO_PCI_OFFSET_TO_INDEX(offset), offset & V.VFIO_PCI_OFFSET_MASK
        self._rw(index, off, len(data), data)
        return len(data)

    def _rw(self, index: int, off: int, count: int, data: bytes | None) -> bytes:
        """vfio_pci_rw(): count 0 is 0 bytes; bad index EINVAL; accesses split into
        aligned 1, 2 and 4 byte pieces as the kernel's config and BAR paths do."""
        if count == 0:
            return b""
        if index >= V.VFIO_PCI_NUM_REGIONS:
            raise KernelError(errno.EINVAL, f"region {index}")
        if index == V.VFIO_PCI_ROM_REGION_INDEX and data is not None:
            raise KernelError(errno.EINVAL, "the ROM is read-only")
        size, _ = self.region(index)
        if off >= size:
            raise KernelError(
                errno.EINVAL, f"offset {off:#x} past region {index} ({size:#x})"
            )
        count = min(count, size - off)
        p = self.pdev
        out = bytearray()
        pos = off
        while pos < off + count:
            n = (
                4
                if pos % 4 == 0 and off + count - pos >= 4
                else 2
                if pos % 2 == 0 and off + count - pos >= 2
                else 1
            )
            if data is None:
                piece = (
                    p.config_read(pos, n)
                    if index == V.VFIO_PCI_CONFIG_REGION_INDEX
                    else p.bar_read(index, pos, n)
                )
                out += piece
            else:
                chunk = data[pos - off : pos - off + n]
                if index == V.VFIO_PCI_CONFIG_REGION_INDEX:
                    p.config_write(pos, chunk)
                else:
                    p.bar_write(index, pos, chunk)
            pos += n
        return bytes(out)


def vfio_pci_ioctl_get_info(vdev: VfioPciCoreDevice, ucmd: Ucmd) -> int:
    flags = V.VFIO_DEVICE_FLAGS_PCI | V.VFIO_DEVICE_FLAGS_RESET
    info = V.VfioDeviceInfo(
        ucmd.argsz, flags, V.VFIO_PCI_NUM_REGIONS, V.VFIO_PCI_NUM_IRQS, 0, 0
    )
    ucmd.respond(info)
    return 0


def vfio_pci_ioctl_get_region_info(vdev: VfioPciCoreDevice, ucmd: Ucmd) -> int:
    info = ucmd.cmd
    if info.index >= V.VFIO_PCI_NUM_REGIONS:
        raise KernelError(errno.EINVAL, f"region index {info.index}")
    size, flags = vdev.region(info.index)
    out = V.VfioRegionInfo(
        info.argsz, flags, info.index, 0, size, V.VFIO_PCI_INDEX_TO_OFFSET(info.index)
    )
    ucmd.respond(out, limit=V.VfioRegionInfo.SIZE)
    return 0


def vfio_pci_ioctl_get_irq_info(vdev: VfioPciCoreDevice, ucmd: Ucmd) -> int:
    info = ucmd.cmd
    if info.index >= V.VFIO_PCI_NUM_IRQS:
        raise KernelError(errno.EINVAL, f"irq index {info.index}")
    if info.index == V.VFIO_PCI_ERR_IRQ_INDEX and not vdev.pdev.spec.pcie:
        raise KernelError(errno.EINVAL, "ERR irq needs PCIe")
    flags = V.VFIO_IRQ_INFO_EVENTFD
    if info.index == V.VFIO_PCI_INTX_IRQ_INDEX:
        flags |= V.VFIO_IRQ_INFO_MASKABLE | V.VFIO_IRQ_INFO_AUTOMASKED
    else:
        flags |= V.VFIO_IRQ_INFO_NORESIZE
    ucmd.respond(
        V.VfioIrqInfo(info.argsz, flags, info.index, irq_count(vdev.pdev, info.index)),
        limit=V.VfioIrqInfo.SIZE,
    )
    return 0


def vfio_pci_ioctl_set_irqs(vdev: VfioPciCoreDevice, ucmd: Ucmd) -> int:
    return vfio_pci_set_irqs(vdev.irqs, vdev.pdev, ucmd.caller, ucmd.arg, ucmd.cmd)


def vfio_pci_ioctl_reset(vdev: VfioPciCoreDevice, ucmd: Ucmd) -> int:
    vdev.pdev.reset()
    return 0


def vfio_pci_ioctl_get_pci_hot_reset_info(vdev: VfioPciCoreDevice, ucmd: Ucmd) -> int:
    """The devices a bus reset would touch: just this one (each simulated device sits
    alone on its slot). A short buffer is ENOSPC with ``count`` written back."""
    info = ucmd.cmd
    if info.flags:
        raise KernelError(errno.EINVAL, "flags must be 0")
    group = vdev.pdev.iommu_group
    bdf = vdev.pdev.bdf
    bus, devfn = int(bdf[5:7], 16), (int(bdf[8:10], 16) << 3) | int(bdf[11])
    devs = [
        V.VfioPciDependentDevice(group.id if group else 0, int(bdf[:4], 16), bus, devfn)
    ]
    need = V.VfioPciHotResetInfo.SIZE + len(devs) * V.VfioPciDependentDevice.SIZE
    out = V.VfioPciHotResetInfo(info.argsz, 0, len(devs))
    ucmd.caller.copy_to_user(ucmd.arg, out.pack())
    if info.argsz < need:
        raise KernelError(errno.ENOSPC, "buffer too small for the dependent devices")
    ucmd.caller.copy_to_user(
        ucmd.arg + V.VfioPciHotResetInfo.SIZE, b"".join(d.pack() for d in devs)
    )
    return 0


def vfio_pci_ioctl_pci_hot_reset(vdev: VfioPciCoreDevice, ucmd: Ucmd) -> int:
    """Group fds must cover every affected device (here: this device's own group)."""
    hr = ucmd.cmd
    if hr.flags:
        raise KernelError(errno.EINVAL, "flags must be 0")
    if hr.argsz - V.VfioPciHotReset.SIZE < 4 * hr.count:
        raise KernelError(errno.EINVAL, "argsz too small for the group fds")
    fds = list(
        struct.unpack(
            f"<{hr.count}i",
            ucmd.caller.copy_from_user(ucmd.arg + V.VfioPciHotReset.SIZE, 4 * hr.count),
        )
    )
    refs = ucmd.caller.fget_many(fds)
    groups = []
    for ref in refs:
        handle = getattr(ref, "handle", None)
        if not isinstance(handle, VfioGroupFile):
            raise KernelError(errno.EINVAL, "not a VFIO group fd")
        groups.append(handle.group.iommu_group)
    if vdev.pdev.iommu_group not in groups:
        raise KernelError(
            errno.EINVAL, "the group fds do not cover the affected devices"
        )
    vdev.pdev.reset()
    return 0


IOCTLS: IoctlTable[VfioPciCoreDevice] = IoctlTable(
    [
        IoctlOp(
            V.VFIO_DEVICE_GET_INFO,
            "VFIO_DEVICE_GET_INFO",
            vfio_pci_ioctl_get_info,
            ArgKind.ARGSZ,
            V.VfioDeviceInfo,
            "num_irqs",
        ),
        IoctlOp(
            V.VFIO_DEVICE_GET_IRQ_INFO,
            "VFIO_DEVICE_GET_IRQ_INFO",
            vfio_pci_ioctl_get_irq_info,
            ArgKind.ARGSZ,
            V.VfioIrqInfo,
            "count",
        ),
        IoctlOp(
            V.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
            "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO",
            vfio_pci_ioctl_get_pci_hot_reset_info,
            ArgKind.ARGSZ,
            V.VfioPciHotResetInfo,
            "count",
        ),
        IoctlOp(
            V.VFIO_DEVICE_GET_REGION_INFO,
            "VFIO_DEVICE_GET_REGION_INFO",
            vfio_pci_ioctl_get_region_info,
            ArgKind.ARGSZ,
            V.VfioRegionInfo,
            "offset",
        ),
        IoctlOp(
            V.VFIO_DEVICE_PCI_HOT_RESET,
            "VFIO_DEVICE_PCI_HOT_RESET",
            vfio_pci_ioctl_pci_hot_reset,
            ArgKind.ARGSZ,
            V.VfioPciHotReset,
            "count",
        ),
        IoctlOp(V.VFIO_DEVICE_RESET, "VFIO_DEVICE_RESET", vfio_pci_ioctl_reset),
        IoctlOp(
            V.VFIO_DEVICE_SET_IRQS,
            "VFIO_DEVICE_SET_IRQS",
            vfio_pci_ioctl_set_irqs,
            ArgKind.ARGSZ,
            V.VfioIrqSet,
            "count",
        ),
    ]
)
