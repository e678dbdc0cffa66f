"""`PciDevice`: a PCI function as the hardware behaves.

Config space (256 bytes, or 4 KiB for PCIe) has a capability list (power management, MSI,
MSI-X, PCI Express) and per-byte write masks: read-only bits ignore writes, BAR bits below
the BAR's size read back as zero (so writing all-ones sizes it), STATUS bits are RW1C.
A model subclass implements `mmio_read` / `mmio_write` for its BARs, raises interrupts
with `raise_irq` and reaches memory with `dma_read` / `dma_write`, which go through the
device's IOMMU group. The MSI-X table and PBA live in the first memory BAR's upper half.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import ClassVar

from ..abi import pci_regs as R
from ..config import BarSpec, DeviceSpec
from ..iommu.dma import dma_read, dma_write
from ..iommu.group import IommuGroup

IrqSink = Callable[[int, int], None]  # (vfio irq index: 0 INTx, 1 MSI, 2 MSI-X; vector)

CAP_PM, CAP_MSI, CAP_MSIX, CAP_EXP = 0x40, 0x50, 0x70, 0x80


class PciDevice:
    """A simulated PCI function built from a topology `DeviceSpec`."""

    model_name: ClassVar[str] = "generic"

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.bdf = spec.bdf
        self.driver = spec.driver
        self.iommu_group: IommuGroup | None = None
        self.irq_sink: IrqSink | None = None
        self.config_size = (
            R.PCI_CFG_SPACE_EXP_SIZE if spec.pcie else R.PCI_CFG_SPACE_SIZE
        )
        self.bars: dict[int, BarSpec] = {b.index: b for b in spec.bars}
        self.msix_bar: int | None = None
        if spec.irqs.msix:
            self.msix_bar = min(i for i, b in self.bars.items() if b.type == "mem")
        self._build_config()
        self.reset()

    # --- config space --------------------------------------------------------------------

    def _build_config(self) -> None:
        """Power-on config space (``initial``) and its write masks: the header, the
        BARs, then the capability list."""
        n = self.config_size
        self.initial = bytearray(n)
        self.wmask = bytearray(n)
        self.w1cmask = bytearray(n)
        self._build_header()
        self._build_bars()
        self._build_caps()

    def _put(self, off: int, fmt: str, value: int) -> None:
        struct.pack_into("<" + fmt, self.initial, off, value)

    def _wm(self, off: int, fmt: str, mask: int) -> None:
        struct.pack_into("<" + fmt, self.wmask, off, mask)

    def _build_header(self) -> None:
        s, put, wm = self.spec, self._put, self._wm
        put(R.PCI_VENDOR_ID, "H", s.vendor)
        put(R.PCI_DEVICE_ID, "H", s.device)
        put(R.PCI_REVISION_ID, "B", s.revision)
        put(
            R.PCI_CLASS_PROG, "I", s.class_code
        )  # 3 bytes; the 4th is overwritten below
        put(R.PCI_CACHE_LINE_SIZE, "B", 0)
        put(R.PCI_HEADER_TYPE, "B", 0)
        put(R.PCI_SUBSYSTEM_VENDOR_ID, "H", s.subsystem_vendor)
        put(R.PCI_SUBSYSTEM_ID, "H", s.subsystem_device)
        wm(
            R.PCI_COMMAND,
            "H",
            R.PCI_COMMAND_IO
            | R.PCI_COMMAND_MEMORY
            | R.PCI_COMMAND_MASTER
            | R.PCI_COMMAND_PARITY
            | R.PCI_COMMAND_SERR
            | R.PCI_COMMAND_INTX_DISABLE,
        )
        struct.pack_into(
            "<H", self.w1cmask, R.PCI_STATUS, 0xF900
        )  # error bits are RW1C
        wm(R.PCI_CACHE_LINE_SIZE, "B", 0xFF)
        wm(R.PCI_LATENCY_TIMER, "B", 0xFF)
        wm(R.PCI_INTERRUPT_LINE, "B", 0xFF)
        if s.irqs.intx:
            put(R.PCI_INTERRUPT_PIN, "B", 1)

    def _build_bars(self) -> None:
        """BAR flags; the bits below each BAR's size are read-only zeros."""
        put, wm = self._put, self._wm
        for i, bar in self.bars.items():
            off = R.PCI_BASE_ADDRESS_0 + 4 * i
            if bar.type == "io":
                put(off, "I", R.PCI_BASE_ADDRESS_SPACE_IO)
                wm(off, "I", ~(bar.size - 1) & 0xFFFFFFFC)
                continue
            flags = (R.PCI_BASE_ADDRESS_MEM_TYPE_64 if bar.is_64 else 0) | (
                R.PCI_BASE_ADDRESS_MEM_PREFETCH if bar.prefetch else 0
            )
            put(off, "I", flags)
            mask = ~(bar.size - 1) & ((1 << 64) - 1 if bar.is_64 else 0xFFFFFFFF) & ~0xF
            wm(off, "I", mask & 0xFFFFFFFF)
            if bar.is_64:
                wm(off + 4, "I", mask >> 32)

    def _build_caps(self) -> None:
        """The capability list PM -> MSI -> MSI-X -> PCIe and each capability's fields."""
        s, put, wm = self.spec, self._put, self._wm
        caps: list[tuple[int, int]] = [(CAP_PM, R.PCI_CAP_ID_PM)]
        if s.irqs.msi:
            caps.append((CAP_MSI, R.PCI_CAP_ID_MSI))
        if s.irqs.msix:
            caps.append((CAP_MSIX, R.PCI_CAP_ID_MSIX))
        if s.pcie:
            caps.append((CAP_EXP, R.PCI_CAP_ID_EXP))
        put(R.PCI_STATUS, "H", R.PCI_STATUS_CAP_LIST)
        put(R.PCI_CAPABILITY_LIST, "B", caps[0][0])
        for (off, cid), nxt in zip(caps, [*[c[0] for c in caps[1:]], 0], strict=True):
            put(off, "B", cid)
            put(off + 1, "B", nxt)
        put(CAP_PM + 2, "H", 0x0003)  # PMC: version 3
        wm(CAP_PM + R.PCI_PM_CTRL, "H", 0x0003)  # power state
        if s.irqs.msi:
            qmask = (s.irqs.msi.bit_length() - 1) << 1
            put(CAP_MSI + R.PCI_MSI_FLAGS, "H", qmask | R.PCI_MSI_FLAGS_64BIT)
            wm(
                CAP_MSI + R.PCI_MSI_FLAGS,
                "H",
                R.PCI_MSI_FLAGS_ENABLE | R.PCI_MSI_FLAGS_QSIZE,
            )
            wm(CAP_MSI + 4, "I", 0xFFFFFFFC)  # address
            wm(CAP_MSI + 8, "I", 0xFFFFFFFF)  # upper address
            wm(CAP_MSI + 12, "H", 0xFFFF)  # data
        if s.irqs.msix and self.msix_bar is not None:
            size = self.bars[self.msix_bar].size
            put(CAP_MSIX + R.PCI_MSIX_FLAGS, "H", s.irqs.msix - 1)
            wm(
                CAP_MSIX + R.PCI_MSIX_FLAGS,
                "H",
                R.PCI_MSIX_FLAGS_ENABLE | R.PCI_MSIX_FLAGS_MASKALL,
            )
            put(CAP_MSIX + R.PCI_MSIX_TABLE, "I", self.msix_bar | size // 2)
            put(CAP_MSIX + R.PCI_MSIX_PBA, "I", self.msix_bar | size * 3 // 4)
        if s.pcie:
            put(CAP_EXP + R.PCI_EXP_FLAGS, "H", 0x0002)  # v2, endpoint
            put(CAP_EXP + R.PCI_EXP_DEVCAP, "I", R.PCI_EXP_DEVCAP_FLR)
            wm(CAP_EXP + R.PCI_EXP_DEVCTL, "H", 0x7FFF)

    def config_read(self, offset: int, size: int) -> bytes:
        """Read config space (out of range reads as all-ones, like a master abort)."""
        data = bytes(self.config[offset : offset + size])
        return data + b"\xff" * (size - len(data))

    def config_write(self, offset: int, data: bytes) -> None:
        """Write config space through the write masks (RO bits kept, RW1C bits cleared)."""
        for i, b in enumerate(data):
            off = offset + i
            if off >= self.config_size:
                break
            wm, w1c = self.wmask[off], self.w1cmask[off]
            old = self.config[off]
            self.config[off] = (old & ~wm) | (b & wm)
            self.config[off] &= ~(b & w1c) & 0xFF
        self.config_changed(offset, len(data))

    def config_changed(self, offset: int, size: int) -> None:
        """Hook for models; called after every config write."""

    def cfg(self, offset: int, fmt: str = "H") -> int:
        return int(struct.unpack_from("<" + fmt, self.config, offset)[0])

    # --- BARs ----------------------------------------------------------------------------

    def bar_read(self, index: int, offset: int, size: int) -> bytes:
        """A read of ``size`` bytes at ``offset`` of BAR ``index``."""
        if index == self.msix_bar and offset >= self.bars[index].size // 2:
            return self._msix_read(offset - self.bars[index].size // 2, size)
        return self.mmio_read(index, offset, size)

    def bar_write(self, index: int, offset: int, data: bytes) -> None:
        if index == self.msix_bar and offset >= self.bars[index].size // 2:
            self._msix_write(offset - self.bars[index].size // 2, data)
            return
        self.mmio_write(index, offset, data)

    def mmio_read(self, index: int, offset: int, size: int) -> bytes:
        """Models override: register reads. The default reads zeros."""
        return bytes(size)

    def mmio_write(self, index: int, offset: int, data: bytes) -> None:
        """Models override: register writes. The default ignores them."""

    def _msix_read(self, off: int, size: int) -> bytes:
        half = self.bars[self.msix_bar or 0].size // 4
        if off < half:
            return bytes(self.msix_table[off : off + size]).ljust(size, b"\0")
        pba = sum(1 << v for v in self.msix_pending)
        return pba.to_bytes(half, "little")[off - half : off - half + size].ljust(
            size, b"\0"
        )

    def _msix_write(self, off: int, data: bytes) -> None:
        if off < len(self.msix_table):
            self.msix_table[off : off + len(data)] = data[: len(self.msix_table) - off]
            for v in list(self.msix_pending):
                if not self.msix_masked(v):
                    self.msix_pending.discard(v)
                    self._deliver(2, v)

    # --- interrupts ----------------------------------------------------------------------

    @property
    def msix_enabled(self) -> bool:
        return bool(
            self.spec.irqs.msix
            and self.cfg(CAP_MSIX + R.PCI_MSIX_FLAGS) & R.PCI_MSIX_FLAGS_ENABLE
        )

    @property
    def msi_enabled(self) -> bool:
        return bool(
            self.spec.irqs.msi
            and self.cfg(CAP_MSI + R.PCI_MSI_FLAGS) & R.PCI_MSI_FLAGS_ENABLE
        )

    def set_msi_mode(self, index: int, nvec: int) -> None:
        """What the host kernel does for vfio-pci when userspace sets up interrupts
        (pci_alloc_irq_vectors): enable MSI (index 1) or MSI-X (index 2) with ``nvec``
        unmasked vectors, or turn both off (``nvec`` 0), leaving INTx."""
        msi_flags = CAP_MSI + R.PCI_MSI_FLAGS
        msix_flags = CAP_MSIX + R.PCI_MSIX_FLAGS
        if self.spec.irqs.msi:
            v = self.cfg(msi_flags) & ~R.PCI_MSI_FLAGS_ENABLE
            struct.pack_into(
                "<H",
                self.config,
                msi_flags,
                v | (R.PCI_MSI_FLAGS_ENABLE if index == 1 and nvec else 0),
            )
        if self.spec.irqs.msix:
            v = self.cfg(msix_flags) & ~(
                R.PCI_MSIX_FLAGS_ENABLE | R.PCI_MSIX_FLAGS_MASKALL
            )
            struct.pack_into(
                "<H",
                self.config,
                msix_flags,
                v | (R.PCI_MSIX_FLAGS_ENABLE if index == 2 and nvec else 0),
            )
            for vec in range(self.spec.irqs.msix):
                self.msix_table[vec * 16 + 12] = 0 if index == 2 and vec < nvec else 1
        if index in (1, 2) and nvec:
            cmd = self.cfg(R.PCI_COMMAND) | R.PCI_COMMAND_INTX_DISABLE
            struct.pack_into("<H", self.config, R.PCI_COMMAND, cmd)

    def msix_masked(self, vector: int) -> bool:
        ctrl = self.msix_table[vector * 16 + 12]
        return bool(
            ctrl & 1 or self.cfg(CAP_MSIX + R.PCI_MSIX_FLAGS) & R.PCI_MSIX_FLAGS_MASKALL
        )

    def raise_irq(self, vector: int = 0) -> None:
        """Signal interrupt ``vector`` the way config space says: MSI-X, MSI or INTx."""
        if self.msix_enabled:
            if vector < self.spec.irqs.msix:
                if self.msix_masked(vector):
                    self.msix_pending.add(vector)
                else:
                    self._deliver(2, vector)
        elif self.msi_enabled:
            self._deliver(1, vector)
        elif (
            self.spec.irqs.intx
            and not self.cfg(R.PCI_COMMAND) & R.PCI_COMMAND_INTX_DISABLE
        ):
            self.config[R.PCI_STATUS] |= R.PCI_STATUS_INTERRUPT
            self._deliver(0, 0)

    def _deliver(self, index: int, vector: int) -> None:
        self.irqs_raised += 1
        if self.irq_sink is not None:
            self.irq_sink(index, vector)

    # --- DMA, reset ----------------------------------------------------------------------

    def dma_read(self, iova: int, size: int) -> bytes:
        """Read memory as the device, through the IOMMU. Raises DmaFault."""
        assert self.iommu_group is not None
        return dma_read(self.iommu_group, iova, size)

    def dma_write(self, iova: int, data: bytes) -> None:
        """Write memory as the device, through the IOMMU. Raises DmaFault."""
        assert self.iommu_group is not None
        dma_write(self.iommu_group, iova, data)

    def reset(self) -> None:
        """Function-level reset: config space and device state back to power-on."""
        self.config = bytearray(self.initial)
        self.msix_table = bytearray(16 * self.spec.irqs.msix)
        for v in range(self.spec.irqs.msix):
            self.msix_table[v * 16 + 12] = 1  # vectors start masked
        self.msix_pending: set[int] = set()
        self.irqs_raised = 0
        self.reset_state()

    def reset_state(self) -> None:
        """Models override: reset registers."""
