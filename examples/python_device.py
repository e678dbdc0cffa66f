"""A device written with the Python device API: a "stamp" engine.

BAR0 registers (32-bit): 0x0 ADDR_LO, 0x4 ADDR_HI, 0x8 VALUE, 0xc GO (write 1: DMA-write
VALUE as 4 bytes at ADDR through the IOMMU, then raise vector 0), 0x10 STAMPS (count).
Name it in a topology as ``model = "examples.python_device:StampDevice"``.
"""

from __future__ import annotations

import struct

from vfiofs.devices import PciDevice
from vfiofs.iommu.dma import DmaFault


class StampDevice(PciDevice):
    model_name = "stamp"

    def reset_state(self) -> None:
        self.regs = [0] * 5
        self.faults = 0

    def mmio_read(self, index: int, offset: int, size: int) -> bytes:
        value = self.regs[offset // 4] if index == 0 and offset < 20 else 0
        return value.to_bytes(4, "little")[:size]

    def mmio_write(self, index: int, offset: int, data: bytes) -> None:
        if index != 0 or offset >= 20:
            return
        self.regs[offset // 4] = int.from_bytes(data.ljust(4, b"\0"), "little")
        if offset == 0xC and self.regs[3] & 1:
            addr = self.regs[0] | self.regs[1] << 32
            try:
                self.dma_write(addr, struct.pack("<I", self.regs[2]))
            except DmaFault:
                self.faults += 1
                return
            self.regs[4] += 1
            self.raise_irq(0)
