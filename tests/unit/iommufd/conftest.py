"""A machine behind the mock IOMMU with IOMMU_TEST_CMD on, and helpers that call
/dev/iommu the way a process does (FakeCaller memory, real ioctl numbers)."""

from __future__ import annotations

import errno
import struct
from typing import Any

import pytest

from vfiofs.abi import iommufd as I, iommufd_test as T, vfio as V
from vfiofs.config import parse_topology
from vfiofs.devices.models.memcpy import DOORBELL, DST, LEN, SRC, STATUS
from vfiofs.errors import KernelError
from vfiofs.iommufd.iommufd_private import IommufdCtx
from vfiofs.machine import Machine
from vfiofs.uaccess import FakeCaller, OurFile

MB = 1 << 20
MOCK_TOPOLOGY = """
[options]
iommu = "mock"
iommufd_test = true

[[group]]
[[group.device]]
bdf = "0000:00:04.0"
model = "memcpy"
vendor = 0x1b36
device = 0x0005
pasid = 20
irqs = { intx = true, msi = 1, msix = 4 }
[[group.device.bar]]
index = 0
size = 4096

[[group]]
[[group.device]]
bdf = "0000:00:05.0"
model = "memcpy"
vendor = 0x1b36
device = 0x0005
[[group.device.bar]]
index = 0
size = 4096
"""


class Env:
    """One /dev/iommu context of a mock machine, and a caller with 16 MiB of memory."""

    def __init__(self, topology: str = MOCK_TOPOLOGY) -> None:
        self.m = Machine(parse_topology(topology))
        self.c = FakeCaller()
        self.c.mm.size = 16 * MB
        self.c.mm.__attrs_post_init__()
        self.ctx: IommufdCtx = self.m.iommufd_open(self.c, 0)
        self.c.fds[3] = OurFile(self.ctx)
        self.buf = self.c.alloc(4 * MB, align=MB)  # DMA target memory, 1 MiB aligned

    def call(
        self, cmd: int, st: Any, extra: bytes = b"", size: int | None = None
    ) -> tuple[int, Any]:
        """Run an ioctl; (return value or -errno, the struct as the caller sees it)."""
        raw = st.pack() + extra
        if size is not None:
            raw = size.to_bytes(4, "little") + raw[4:]
        arg = self.c.alloc(raw)
        try:
            rc = self.ctx.ioctl(self.c, cmd, arg)
        except KernelError as e:
            rc = -e.errno
        return rc, type(st).unpack_from(self.c.mm.read(arg, type(st).SIZE))

    def ok(self, cmd: int, st: Any) -> Any:
        rc, out = self.call(cmd, st)
        assert rc == 0, (hex(cmd), errno.errorcode.get(-rc, rc))
        return out

    def test(self, op: int, id: int = 0, payload: Any = None) -> tuple[int, bytes]:
        """IOMMU_TEST_CMD; (rc, the payload bytes after the call)."""
        data = payload.pack() if payload is not None else b""
        cmd = T.IommuTestCmd(
            T.IommuTestCmd.SIZE, op, id, 0, data.ljust(T.PAYLOAD, b"\0")
        )
        rc, out = self.call(T.IOMMU_TEST_CMD, cmd)
        return rc, out.payload

    def test_ok(
        self, op: int, id: int = 0, payload: Any = None, out: Any = None
    ) -> Any:
        rc, data = self.test(op, id, payload)
        assert rc >= 0, (op, errno.errorcode.get(-rc, rc))
        return out.unpack_from(data) if out is not None else rc

    def ioas(self) -> int:
        return int(self.ok(I.IOMMU_IOAS_ALLOC, I.IommuIoasAlloc(12, 0, 0)).out_ioas_id)

    def map(
        self, ioas: int, iova: int, length: int, va: int | None = None, flags: int = 7
    ) -> int:
        st = I.IommuIoasMap(
            40, flags, ioas, 0, self.buf if va is None else va, length, iova
        )
        rc, out = self.call(I.IOMMU_IOAS_MAP, st)
        assert rc == 0, errno.errorcode.get(-rc, rc)
        return int(out.iova)

    def mock_domain(self, ioas: int, flags: int = 0) -> tuple[int, int, int]:
        """(stdev_id, hwpt_id, idev_id) of a new mock device attached to ``ioas``."""
        out = self.test_ok(
            T.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
            ioas,
            T.MockDomainFlags(0, 0, 0, flags),
            T.MockDomainFlags,
        )
        return out.out_stdev_id, out.out_hwpt_id, out.out_idev_id

    def bind_pci(self, index: int = 0) -> tuple[Any, int]:
        """Open vfio<index>, bind it to this context: (device file, dev_id)."""
        df = self.m.tree.root.walk(f"dev/vfio/devices/vfio{index}").opener(self.c, 0)  # type: ignore[attr-defined]
        arg = self.c.alloc(V.VfioDeviceBindIommufd(24, 0, 3, 0, 0).pack())
        df.ioctl(self.c, V.VFIO_DEVICE_BIND_IOMMUFD, arg)
        return df, int.from_bytes(self.c.mm.read(arg + 12, 4), "little")

    def attach_pci(self, df: Any, pt_id: int, pasid: int | None = None) -> int:
        flags = V.VFIO_DEVICE_ATTACH_PASID if pasid is not None else 0
        arg = self.c.alloc(
            V.VfioDeviceAttachIommufdPt(16, flags, pt_id, pasid or 0).pack()
        )
        df.ioctl(self.c, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, arg)
        return int.from_bytes(self.c.mm.read(arg + 8, 4), "little")

    def hwpt(
        self,
        dev_id: int,
        pt_id: int,
        flags: int = 0,
        data: Any = None,
        data_type: int = 0,
        fault_id: int = 0,
    ) -> tuple[int, int]:
        """HWPT_ALLOC: (rc, hwpt id)."""
        uptr, dlen = 0, 0
        if data is not None:
            raw = data.pack()
            uptr, dlen = self.c.alloc(raw), len(raw)
        st = I.IommuHwptAlloc(
            48, flags, dev_id, pt_id, 0, 0, data_type, dlen, uptr, fault_id, 0
        )
        rc, out = self.call(I.IOMMU_HWPT_ALLOC, st)
        return rc, int(out.out_hwpt_id)


def memcpy(env: Env, src: int, dst: int, n: int, bdf: str = "0000:00:04.0") -> int:
    """Run one copy on the memcpy device; its STATUS (2 done, 3 error)."""
    dev = env.m.devices[bdf]
    dev.mmio_write(0, SRC, struct.pack("<Q", src))
    dev.mmio_write(0, DST, struct.pack("<Q", dst))
    dev.mmio_write(0, LEN, struct.pack("<I", n))
    dev.mmio_write(0, DOORBELL, struct.pack("<I", 1))
    return int.from_bytes(dev.mmio_read(0, STATUS, 4), "little")


def dirty_bitmap(
    env: Env, hwpt: int, iova: int, length: int, page: int, flags: int = 0
) -> tuple[int, int]:
    words = (length // page + 63) // 64 if page else 1
    data = env.c.alloc(bytes(words * 8))
    st = I.IommuHwptGetDirtyBitmap(48, hwpt, flags, 0, iova, length, page, data)
    rc, _ = env.call(I.IOMMU_HWPT_GET_DIRTY_BITMAP, st)
    raw = env.c.mm.read(data, words * 8)
    return rc, int.from_bytes(raw, "little")


def err(fn: Any, *args: Any) -> int:
    """-errno of a call that must fail with a KernelError (else the test fails)."""
    with pytest.raises(KernelError) as e:
        fn(*args)
    return -e.value.errno


@pytest.fixture
def env() -> Env:
    return Env()
