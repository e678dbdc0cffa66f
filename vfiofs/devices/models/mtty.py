"""The kernel's mtty sample (samples/vfio-mdev/mtty.c): a 16550-style UART in an 8-byte
I/O BAR, in loopback: bytes written to THR become readable from RBR.

Registers (offset: read / write): 0 RBR / THR, 1 IER, 2 IIR / FCR, 3 LCR, 4 MCR, 5 LSR,
6 MSR, 7 SCR. LSR bit 0 (data ready), bits 5-6 (transmitter empty). With IER bit 0 set,
received data raises the interrupt (INTx or MSI) and IIR reads 0x04 (data available).
"""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from ..pci import PciDevice

RBR, IER, IIR, LCR, MCR, LSR, MSR, SCR = range(8)
LSR_DR, LSR_THRE, LSR_TEMT = 0x01, 0x20, 0x40
IER_RDI = 0x01
IIR_NO_INT, IIR_RDI = 0x01, 0x04
FIFO_SIZE = 16


class MttyDevice(PciDevice):
    model_name: ClassVar[str] = "mtty"

    def reset_state(self) -> None:
        self.fifo: deque[int] = deque()
        self.regs = bytearray(8)

    def mmio_read(self, index: int, offset: int, size: int) -> bytes:
        out = bytearray()
        for off in range(offset, offset + size):
            out.append(self._read(off) if index == 0 and off < 8 else 0xFF)
        return bytes(out)

    def _read(self, off: int) -> int:
        if off == RBR:
            if self.regs[LCR] & 0x80:
                return self.regs[RBR]  # divisor latch
            return self.fifo.popleft() if self.fifo else 0
        if off == IIR:
            return IIR_RDI if self.fifo and self.regs[IER] & IER_RDI else IIR_NO_INT
        if off == LSR:
            return LSR_THRE | LSR_TEMT | (LSR_DR if self.fifo else 0)
        return self.regs[off]

    def mmio_write(self, index: int, offset: int, data: bytes) -> None:
        if index != 0:
            return
        for i, b in enumerate(data):
            off = offset + i
            if off == RBR and not self.regs[LCR] & 0x80:
                if len(self.fifo) < FIFO_SIZE:
                    self.fifo.append(b)
                if self.regs[IER] & IER_RDI:
                    self.raise_irq(0)
            elif off < 8 and off not in (LSR, MSR):
                self.regs[off] = b
