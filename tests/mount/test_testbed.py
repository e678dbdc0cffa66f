"""The Python device API and the `vfio_testbed` fixture: a device written in a few dozen
lines (examples/python_device.py) driven through the cdev path, with the test reaching
into the simulated hardware."""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import select
import struct
import time
from pathlib import Path

import pytest

from vfiofs.abi import iommufd as I, vfio as V

pytestmark = pytest.mark.mount

STAMP = """
[[group]]
id = 0
[[group.device]]
bdf = "0000:00:07.0"
model = "examples.python_device:StampDevice"
vendor = 0x1234
device = 0x5678
irqs = { intx = true, msi = 1 }
[[group.device.bar]]
index = 0
size = 4096
"""


def ioctl(fd: int, cmd: int, st: object) -> bytes:
    buf = bytearray(st.pack())  # type: ignore[attr-defined]
    fcntl.ioctl(fd, cmd, buf, True)
    return bytes(buf)


@pytest.mark.vfio_topology(STAMP)
def test_python_device_through_cdev_and_testbed(vfio_testbed) -> None:  # type: ignore[no-untyped-def]
    tb = vfio_testbed
    assert (
        Path(tb.path("sys/bus/pci/devices/0000:00:07.0/vendor")).read_text()
        == "0x1234\n"
    )
    dev = os.open(tb.path("dev/vfio/devices/vfio0"), os.O_RDWR)
    ictx = os.open(tb.path("dev/iommu"), os.O_RDWR)
    ev = os.eventfd(0, os.EFD_NONBLOCK)
    buf = mmap.mmap(-1, 4096)
    try:
        out = ioctl(
            dev, V.VFIO_DEVICE_BIND_IOMMUFD, V.VfioDeviceBindIommufd(24, 0, ictx, 0, 0)
        )
        assert V.VfioDeviceBindIommufd.unpack_from(out).out_devid == 1
        ioas = I.IommuIoasAlloc.unpack_from(
            ioctl(ictx, I.IOMMU_IOAS_ALLOC, I.IommuIoasAlloc(12, 0, 0))
        ).out_ioas_id
        ioctl(
            dev,
            V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            V.VfioDeviceAttachIommufdPt(16, 0, ioas, 0),
        )
        va = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        flags = (
            I.IOMMU_IOAS_MAP_FIXED_IOVA
            | I.IOMMU_IOAS_MAP_READABLE
            | I.IOMMU_IOAS_MAP_WRITEABLE
        )
        ioctl(
            ictx,
            I.IOMMU_IOAS_MAP,
            I.IommuIoasMap(40, flags, ioas, 0, va, 4096, 0x10000),
        )
        [m] = tb.mappings("0000:00:07.0")
        assert (m.iova, m.size, m.vaddr, m.owner.tgid) == (
            0x10000,
            4096,
            va,
            os.getpid(),
        )
        irq = bytearray(
            V.VfioIrqSet(
                24,
                V.VFIO_IRQ_SET_DATA_EVENTFD | V.VFIO_IRQ_SET_ACTION_TRIGGER,
                V.VFIO_PCI_MSI_IRQ_INDEX,
                0,
                1,
            ).pack()
            + struct.pack("<i", ev)
        )
        fcntl.ioctl(dev, V.VFIO_DEVICE_SET_IRQS, irq, True)
        bar0 = V.VFIO_PCI_INDEX_TO_OFFSET(0)
        os.pwrite(
            dev, struct.pack("<IIII", 0x10040, 0, 0xCAFEF00D, 1), bar0
        )  # ADDR, VALUE, GO
        assert buf[0x40:0x44] == struct.pack("<I", 0xCAFEF00D)
        assert select.select([ev], [], [], 5)[0]
        assert os.eventfd_read(ev) == 1
        assert struct.unpack("<I", os.pread(dev, 4, bar0 + 0x10))[0] == 1
        # the test drives the hardware directly too
        tb.raise_irq("0000:00:07.0", 0)
        assert os.eventfd_read(ev) == 1
        # an unmapped address faults: nothing written, no interrupt
        os.pwrite(dev, struct.pack("<IIII", 0x900000, 0, 1, 1), bar0)
        assert tb.call(lambda: tb.device("0000:00:07.0").faults) == 1
        assert select.select([ev], [], [], 0.2)[0] == []
    finally:
        os.close(dev)
        os.close(ictx)
        os.close(ev)
    # closing the device detaches it; FUSE sends RELEASE asynchronously after close()
    deadline = time.monotonic() + 10
    while tb.mappings("0000:00:07.0") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tb.mappings("0000:00:07.0") == []
