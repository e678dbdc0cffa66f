"""iommufd on the mock IOMMU through a real mount: the C examples under `vfiofs run`
(new fds from FAULT_QUEUE_ALLOC / VEVENTQ_ALLOC installed by the seccomp supervisor,
event files read and polled through FUSE), the plain mount's refusal to create fds,
and IOAS_MAP_FILE of a caller's memfd reached by device DMA."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.uapi import build_example, uapi_cflags
from vfiofs.abi import iommufd as I, iommufd_test as T, vfio as V
from vfiofs.devices.models.memcpy import DOORBELL, DST, LEN, SRC, STATUS

pytestmark = pytest.mark.mount

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "examples/iommufd_mock.toml"
START = T.MOCK_APERTURE_START


def _run(exe: Path) -> subprocess.CompletedProcess[str]:
    """``vfiofs run`` the mock topology with ``exe``; its result."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "vfiofs",
            "run",
            "--config",
            str(TOPOLOGY),
            "--",
            str(exe),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.mark.parametrize("name", ["iommufd_nested", "iommufd_dirty", "iommufd_fault"])
def test_example_under_vfiofs_run(tmp_path: Path, name: str) -> None:
    r = _run(build_example(name, tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAIL" not in r.stdout
    assert r.stdout.rstrip().endswith("done, 0 failures")
    assert "Traceback" not in r.stderr


@pytest.fixture
def mock_mount(start_daemon):  # type: ignore[no-untyped-def]
    return start_daemon(["-m", "vfiofs", "mount", "--config", str(TOPOLOGY), "{mnt}"])


def _ioctl(fd: int, cmd: int, st: object) -> tuple[int, bytes]:
    buf = bytearray(st.pack())  # type: ignore[attr-defined]
    try:
        rc = fcntl.ioctl(fd, cmd, buf, True)
    except OSError as e:
        return -(e.errno or 0), bytes(buf)
    return rc, bytes(buf)


def test_plain_mount_refuses_new_fds_with_a_log(mock_mount) -> None:  # type: ignore[no-untyped-def]
    fd = os.open(mock_mount.mountpoint / "dev/iommu", os.O_RDWR)
    try:
        rc, _ = _ioctl(fd, I.IOMMU_FAULT_QUEUE_ALLOC, I.IommuFaultAlloc(16, 0, 0, 0))
        assert rc == -errno.EOPNOTSUPP
        # nothing was left behind: the first object id is still free
        rc, out = _ioctl(fd, I.IOMMU_IOAS_ALLOC, I.IommuIoasAlloc(12, 0, 0))
        assert rc == 0 and I.IommuIoasAlloc.unpack_from(out).out_ioas_id == 1
        # the test command answers (iommufd_test = true), and MOCK_DOMAIN works here
        cmd = T.IommuTestCmd(72, T.IOMMU_TEST_OP_MOCK_DOMAIN, 1)
        rc, out = _ioctl(fd, T.IOMMU_TEST_CMD, cmd)
        assert rc == 0
        md = T.MockDomain.unpack_from(T.IommuTestCmd.unpack_from(out).payload)
        assert (md.out_stdev_id, md.out_idev_id, md.out_hwpt_id) == (2, 3, 4)
    finally:
        os.close(fd)
    assert "needs `vfiofs run`" in mock_mount.output()


def test_map_file_memfd_receives_device_dma(mock_mount) -> None:  # type: ignore[no-untyped-def]
    mnt = mock_mount.mountpoint
    dev = os.open(mnt / "dev/vfio/devices/vfio0", os.O_RDWR)
    ictx = os.open(mnt / "dev/iommu", os.O_RDWR)
    memfd = os.memfd_create("vfiofs-test")
    try:
        os.ftruncate(memfd, 0x4000)
        rc, out = _ioctl(
            dev, V.VFIO_DEVICE_BIND_IOMMUFD, V.VfioDeviceBindIommufd(24, 0, ictx, 0, 0)
        )
        assert rc == 0
        rc, out = _ioctl(ictx, I.IOMMU_IOAS_ALLOC, I.IommuIoasAlloc(12, 0, 0))
        ioas = I.IommuIoasAlloc.unpack_from(out).out_ioas_id
        rc, _ = _ioctl(
            dev,
            V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            V.VfioDeviceAttachIommufdPt(16, 0, ioas, 0),
        )
        assert rc == 0
        m = mmap.mmap(memfd, 0x4000)
        m[0:16] = b"memfd page zero!"
        st = I.IommuIoasMapFile(40, 7, ioas, memfd, 0, 0x4000, START)
        rc, _ = _ioctl(ictx, I.IOMMU_IOAS_MAP_FILE, st)
        assert rc == 0
        # a regular file outside tmpfs/hugetlbfs is refused as memfd_pin_folios does
        fstype = subprocess.run(
            ["stat", "-f", "-c", "%T", __file__], capture_output=True, text=True
        ).stdout.strip()
        if fstype not in ("tmpfs", "hugetlbfs"):
            with open(__file__, "rb") as f:
                st = I.IommuIoasMapFile(
                    40, 7, ioas, f.fileno(), 0, 4096, START + 0x10000
                )
                assert _ioctl(ictx, I.IOMMU_IOAS_MAP_FILE, st)[0] == -errno.EINVAL
        region = V.VfioRegionInfo(32, 0, 0, 0, 0, 0)
        rc, out = _ioctl(dev, V.VFIO_DEVICE_GET_REGION_INFO, region)
        bar0 = V.VfioRegionInfo.unpack_from(out).offset
        os.pwrite(dev, struct.pack("<Q", START), bar0 + SRC)
        os.pwrite(dev, struct.pack("<Q", START + 0x2000), bar0 + DST)
        os.pwrite(dev, struct.pack("<I", 16), bar0 + LEN)
        os.pwrite(dev, struct.pack("<I", 1), bar0 + DOORBELL)
        assert struct.unpack("<I", os.pread(dev, 4, bar0 + STATUS))[0] == 2
        assert m[0x2000:0x2010] == b"memfd page zero!"  # the device wrote the file
        m.close()
    finally:
        os.close(memfd)
        os.close(dev)
        os.close(ictx)


def test_test_cmd_fds_under_vfiofs_run(compile_c) -> None:  # type: ignore[no-untyped-def]
    """CREATE_ACCESS (out_access_fd), ACCESS_RW/PAGES through that fd (resolved by the
    seccomp supervisor), DMABUF_GET (fd as return value), MAP_FILE of the dma-buf."""
    r = _run(compile_c("iommufd_test_fds", *uapi_cflags()))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.rstrip().endswith("done, 0 failures")
    assert "Traceback" not in r.stderr
