"""A DMA memcpy engine (register map in docs/devices.md).

BAR0, 32-bit registers: 0x00 SRC_LO, 0x04 SRC_HI, 0x08 DST_LO, 0x0c DST_HI, 0x10 LEN,
0x14 DOORBELL (write 1: copy), 0x18 STATUS (0 idle, 2 done, 3 error), 0x1c ERROR
(1 unmapped source, 2 unmapped or read-only destination), 0x20 FAULT_LO, 0x24 FAULT_HI,
0x28 COUNT (copies done). A copy goes through the IOMMU: on completion STATUS is done and
vector 0 is raised; on a DMA fault nothing is written, STATUS is error and no interrupt.
"""

from __future__ import annotations

import struct
from typing import ClassVar

from ...iommu.dma import DmaFault
from ..pci import PciDevice

SRC, DST, LEN, DOORBELL, STATUS, ERROR, FAULT, COUNT = (
    0x00,
    0x08,
    0x10,
    0x14,
    0x18,
    0x1C,
    0x20,
    0x28,
)
STATUS_IDLE, STATUS_DONE, STATUS_ERROR = 0, 2, 3
ERROR_SRC, ERROR_DST = 1, 2
MAX_LEN = 1 << 20


class MemcpyDevice(PciDevice):
    model_name: ClassVar[str] = "memcpy"

    def reset_state(self) -> None:
        self.regs = bytearray(0x30)

    def mmio_read(self, index: int, offset: int, size: int) -> bytes:
        if index != 0:
            return bytes(size)
        return bytes(self.regs[offset : offset + size]).ljust(size, b"\0")

    def mmio_write(self, index: int, offset: int, data: bytes) -> None:
        if index != 0 or offset >= len(self.regs):
            return
        if offset == DOORBELL:
            if int.from_bytes(data, "little") & 1:
                self.copy()
            return
        if offset in (STATUS, ERROR, FAULT, FAULT + 4, COUNT):
            return  # read-only
        self.regs[offset : offset + len(data)] = data[: len(self.regs) - offset]

    def _reg(self, off: int, fmt: str = "I") -> int:
        return int(struct.unpack_from("<" + fmt, self.regs, off)[0])

    def copy(self) -> None:
        src, dst, n = (
            self._reg(SRC, "Q"),
            self._reg(DST, "Q"),
            min(self._reg(LEN), MAX_LEN),
        )
        try:
            data = self.dma_read(src, n)
        except DmaFault as f:
            return self._fail(ERROR_SRC, f.iova)
        try:
            self.dma_write(dst, data)
        except DmaFault as f:
            return self._fail(ERROR_DST, f.iova)
        struct.pack_into("<I", self.regs, STATUS, STATUS_DONE)
        struct.pack_into("<I", self.regs, COUNT, self._reg(COUNT) + 1)
        self.raise_irq(0)

    def _fail(self, code: int, iova: int) -> None:
        struct.pack_into("<IIQ", self.regs, STATUS, STATUS_ERROR, code, iova)
