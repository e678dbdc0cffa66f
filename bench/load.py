"""Load: N client processes x M cycles against one mount, concurrently. Each cycle: open
the device cdev and /dev/iommu, bind, allocate an IOAS, attach, map a buffer, program the
memcpy engine and wait for its MSI-X eventfd, unmap, close. Prints the cycles done and
the daemon's RSS and open fds before and after (a leak shows as growth).

    python bench/load.py [PROCS] [CYCLES]
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import multiprocessing
import os
import select
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BDFS = ["0000:00:04.0", "0000:00:05.1"]


def ioctl(fd: int, cmd: int, data: bytes) -> bytes:
    buf = bytearray(data)
    fcntl.ioctl(fd, cmd, buf, True)
    return bytes(buf)


def cycle(mnt: str, vfio: str, src: mmap.mmap, dst: mmap.mmap) -> None:
    dev = os.open(f"{mnt}/dev/vfio/devices/{vfio}", os.O_RDWR)
    ictx = os.open(f"{mnt}/dev/iommu", os.O_RDWR)
    ev = os.eventfd(0)
    try:
        ioctl(dev, 0x3B76, struct.pack("<IIiIQ", 24, 0, ictx, 0, 0))
        ioas = struct.unpack_from(
            "<III", ioctl(ictx, 0x3B81, struct.pack("<III", 12, 0, 0))
        )[2]
        ioctl(dev, 0x3B77, struct.pack("<IIII", 16, 0, ioas, 0))
        for m, iova in ((src, 0x100000), (dst, 0x200000)):
            va = ctypes.addressof(ctypes.c_char.from_buffer(m))
            ioctl(
                ictx, 0x3B85, struct.pack("<IIIIQQQ", 40, 7, ioas, 0, va, len(m), iova)
            )
        ioctl(dev, 0x3B6E, struct.pack("<IIIIIi", 24, 4 | 32, 2, 0, 1, ev))
        os.pwrite(dev, struct.pack("<QQI", 0x100000, 0x200000, 4096), 0)
        os.pwrite(dev, struct.pack("<I", 1), 0x14)
        select.select([ev], [], [], 5)
        assert os.eventfd_read(ev) == 1 and dst[:8] == src[:8]
        ioctl(ictx, 0x3B86, struct.pack("<IIQQ", 24, ioas, 0, (1 << 64) - 1))
    finally:
        os.close(ev)
        os.close(dev)
        os.close(ictx)


def worker(args: tuple[str, str, int]) -> int:
    mnt, vfio, cycles = args
    src, dst = mmap.mmap(-1, 4096), mmap.mmap(-1, 4096)
    src[:8] = os.urandom(8)
    done = 0
    for _ in range(cycles):
        cycle(mnt, vfio, src, dst)
        done += 1
    return done


def stats(pid: int) -> tuple[int, int]:
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * 4096
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main() -> None:
    procs = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    cycles = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    mnt = tempfile.mkdtemp(prefix="vfiofs-load-")
    topo = Path(mnt + ".toml")
    topo.write_text(
        "".join(
            f'[[group]]\n[[group.device]]\nbdf = "0000:00:{4 + i:02x}.0"\nmodel = "memcpy"\nvendor = 0x1b36\n'
            f"device = 0x0005\nirqs = {{ msix = 1 }}\n[[group.device.bar]]\nindex = 0\nsize = 4096\n"
            for i in range(procs)
        )
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "vfiofs", "mount", mnt, "--config", str(topo)]
    )
    try:
        while not any(
            line.split()[4] == mnt
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
        ):
            time.sleep(0.01)
        os.stat(mnt)
        # warm up, then measure
        worker((mnt, "vfio0", 20))
        before = stats(daemon.pid)
        t0 = time.monotonic()
        jobs = [(mnt, f"vfio{i}", cycles) for i in range(procs)]  # one device each
        with multiprocessing.Pool(procs) as pool:
            done = sum(pool.map(worker, jobs))
        elapsed = time.monotonic() - t0
        time.sleep(
            1.5
        )  # the last RELEASEs are asynchronous; exited processes are reaped each second
        after = stats(daemon.pid)
        print(
            f"load: {procs} processes x {cycles} cycles = {done} cycles in {elapsed:.1f} s ({done / elapsed:.0f}/s)"
        )
        print(
            f"daemon RSS {before[0] / 2**20:.1f} MiB -> {after[0] / 2**20:.1f} MiB, open fds {before[1]} -> {after[1]}"
        )
        mappings = [
            Path(mnt, f"sys/kernel/debug/vfiofs/iommu_groups/{g}/mappings").read_text()
            for g in range(procs)
        ]
        print(f"mappings left: {sum(m.count(chr(10)) for m in mappings)}")
    finally:
        daemon.terminate()
        daemon.wait()
        os.rmdir(mnt)
        topo.unlink()


if __name__ == "__main__":
    main()
