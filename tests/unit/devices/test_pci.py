"""Simulated PCI config space and BARs: read-only and writable bits, BAR sizing, capability
list, reset, and the memcpy / mtty models."""

from __future__ import annotations

import struct

import pytest

from vfiofs.abi import pci_regs as R
from vfiofs.config import BarSpec, DeviceSpec, IrqSpec
from vfiofs.devices.models import model_class
from vfiofs.devices.models.mtty import MttyDevice
from vfiofs.devices.pci import CAP_EXP, CAP_MSI, CAP_MSIX, CAP_PM, PciDevice

SPEC = DeviceSpec(
    bdf="0000:00:04.0",
    vendor=0x1B36,
    device=0x0005,
    subsystem_vendor=0x1AF4,
    subsystem_device=0x1100,
    class_code=0x020000,
    revision=3,
    pcie=True,
    irqs=IrqSpec(intx=True, msi=4, msix=8),
    bars=(
        BarSpec(0, 4096),
        BarSpec(2, 1 << 20, is_64=True, prefetch=True),
        BarSpec(4, 32, type="io"),
    ),
)


def rd(p: PciDevice, off: int, fmt: str) -> int:
    return int(struct.unpack("<" + fmt, p.config_read(off, struct.calcsize(fmt)))[0])


def wr(p: PciDevice, off: int, fmt: str, v: int) -> None:
    p.config_write(off, struct.pack("<" + fmt, v))


@pytest.fixture
def p() -> PciDevice:
    return PciDevice(SPEC)


def test_config_header_ids_are_read_only(p: PciDevice) -> None:
    for off, fmt, want in (
        (0, "H", 0x1B36),
        (2, "H", 0x0005),
        (8, "B", 3),
        (0x2C, "H", 0x1AF4),
        (0x2E, "H", 0x1100),
    ):
        wr(p, off, fmt, 0xFFFF if fmt == "H" else 0xFF)
        assert rd(p, off, fmt) == want
    assert rd(p, 0x09, "I") & 0xFFFFFF == 0x020000
    assert p.config_size == 4096


def test_command_writable_bits_read_back(p: PciDevice) -> None:
    wr(p, R.PCI_COMMAND, "H", 0xFFFF)
    want = (
        R.PCI_COMMAND_IO
        | R.PCI_COMMAND_MEMORY
        | R.PCI_COMMAND_MASTER
        | R.PCI_COMMAND_PARITY
        | R.PCI_COMMAND_SERR
        | R.PCI_COMMAND_INTX_DISABLE
    )
    assert rd(p, R.PCI_COMMAND, "H") == want
    wr(p, R.PCI_COMMAND, "H", 0)
    assert rd(p, R.PCI_COMMAND, "H") == 0


def test_status_cap_list_read_only_and_error_bits_rw1c(p: PciDevice) -> None:
    assert rd(p, R.PCI_STATUS, "H") & R.PCI_STATUS_CAP_LIST
    p.config[R.PCI_STATUS + 1] |= 0x80  # a detected parity error, set by hardware
    wr(p, R.PCI_STATUS, "H", 0)  # writing 0 changes nothing
    assert rd(p, R.PCI_STATUS, "H") & 0x8000
    wr(p, R.PCI_STATUS, "H", 0x8000 | R.PCI_STATUS_CAP_LIST)  # writing 1 clears it
    assert rd(p, R.PCI_STATUS, "H") == R.PCI_STATUS_CAP_LIST


@pytest.mark.parametrize(
    ("index", "mask", "flags"),
    [(0, 0xFFFFF000, 0x0), (2, 0xFFF00000, 0xC), (4, 0xFFFFFFE0, 0x1)],
)
def test_bar_sizing(p: PciDevice, index: int, mask: int, flags: int) -> None:
    off = R.PCI_BASE_ADDRESS_0 + 4 * index
    assert rd(p, off, "I") == flags
    wr(p, off, "I", 0xFFFFFFFF)
    assert rd(p, off, "I") == mask | flags
    wr(p, off, "I", 0xFE000000)
    assert rd(p, off, "I") == (0xFE000000 & mask) | flags


def test_bar_64_upper_half_and_unimplemented_bars(p: PciDevice) -> None:
    wr(p, R.PCI_BASE_ADDRESS_0 + 12, "I", 0xFFFFFFFF)  # upper half of the 64-bit BAR2
    assert rd(p, R.PCI_BASE_ADDRESS_0 + 12, "I") == 0xFFFFFFFF
    for off in (R.PCI_BASE_ADDRESS_0 + 4, R.PCI_BASE_ADDRESS_0 + 20, R.PCI_ROM_ADDRESS):
        wr(p, off, "I", 0xFFFFFFFF)
        assert rd(p, off, "I") == 0  # no BAR / no ROM: sizes to 0


def test_capability_list(p: PciDevice) -> None:
    chain, off = [], rd(p, R.PCI_CAPABILITY_LIST, "B")
    while off:
        chain.append((off, rd(p, off, "B")))
        off = rd(p, off + 1, "B")
    assert chain == [
        (CAP_PM, R.PCI_CAP_ID_PM),
        (CAP_MSI, R.PCI_CAP_ID_MSI),
        (CAP_MSIX, R.PCI_CAP_ID_MSIX),
        (CAP_EXP, R.PCI_CAP_ID_EXP),
    ]
    assert rd(p, CAP_MSI + 2, "H") & R.PCI_MSI_FLAGS_QMASK == 2 << 1  # 4 vectors
    assert rd(p, CAP_MSIX + 2, "H") & R.PCI_MSIX_FLAGS_QSIZE == 7  # 8 vectors
    assert rd(p, CAP_MSIX + 4, "I") == 0 | 2048  # table in BAR0's upper half
    wr(p, CAP_MSI + 2, "H", 0xFFFF)
    assert rd(p, CAP_MSI + 2, "H") & R.PCI_MSI_FLAGS_QMASK == 2 << 1  # capability is RO


def test_reset_restores_config_and_state(p: PciDevice) -> None:
    wr(p, R.PCI_COMMAND, "H", R.PCI_COMMAND_MASTER)
    wr(p, R.PCI_BASE_ADDRESS_0, "I", 0xFFFFFFFF)
    p.reset()
    assert rd(p, R.PCI_COMMAND, "H") == 0
    assert rd(p, R.PCI_BASE_ADDRESS_0, "I") == 0


def test_interrupt_routing(p: PciDevice) -> None:
    got: list[tuple[int, int]] = []
    p.irq_sink = lambda index, vector: got.append((index, vector))
    p.raise_irq(0)
    assert got == [(0, 0)]  # INTx
    assert rd(p, R.PCI_STATUS, "H") & R.PCI_STATUS_INTERRUPT
    wr(p, R.PCI_COMMAND, "H", R.PCI_COMMAND_INTX_DISABLE)
    p.raise_irq(0)
    assert got == [(0, 0)]  # INTx disabled
    p.set_msi_mode(2, 2)
    p.raise_irq(1)
    p.raise_irq(5)  # vector 5 is masked: pending until unmasked
    assert got == [(0, 0), (2, 1)]
    p.bar_write(0, 2048 + 5 * 16 + 12, b"\0\0\0\0")
    assert got[-1] == (2, 5)


def test_mtty_loopback_and_interrupt() -> None:
    spec = DeviceSpec(
        bdf="0000:00:05.0",
        vendor=0x4348,
        device=0x3253,
        model="mtty",
        bars=(BarSpec(0, 8, type="io"),),
    )
    m = model_class("mtty")(spec)
    assert isinstance(m, MttyDevice)
    got: list[tuple[int, int]] = []
    m.irq_sink = lambda i, v: got.append((i, v))
    m.bar_write(0, 1, b"\x01")  # IER: received-data interrupt
    m.bar_write(0, 0, b"h")
    assert m.bar_read(0, 5, 1)[0] & 1  # LSR data ready
    assert m.bar_read(0, 2, 1) == b"\x04"  # IIR: data available
    assert m.bar_read(0, 0, 1) == b"h"
    assert got == [(0, 0)]


def test_model_class_errors() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        model_class("nope")
    with pytest.raises(ValueError, match="No module named"):
        model_class("no.such.module:Cls")
    with pytest.raises(ValueError, match=r"not a vfiofs\.devices\.PciDevice"):
        model_class("struct:Struct")
