"""Client processes for the fault and isolation tests (run as scripts, not collected):

python vfio_client.py hold MNT            set up a cdev + IOAS + map + eventfd, print
                                          "ready", then wait to be killed
python vfio_client.py owner MNT SOCK      map A's buffers, hand the device and iommufd
                                          fds to the peer, then report A's bytes
python vfio_client.py peer SOCK           map B's buffer in A's IOAS, make the device
                                          copy B's bytes to A's IOVA
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import socket
import struct
import sys
import time

BIND, ATTACH = 0x3B76, 0x3B77
IOAS_ALLOC, IOAS_MAP = 0x3B81, 0x3B85
SET_IRQS = 0x3B6E
RW_FIXED = 1 | 2 | 4
BAR0 = 0


def ioctl(fd: int, cmd: int, data: bytes) -> bytes:
    buf = bytearray(data)
    fcntl.ioctl(fd, cmd, buf, True)
    return bytes(buf)


def addr(m: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(m))


def setup(mnt: str) -> tuple[int, int, int]:
    dev = os.open(f"{mnt}/dev/vfio/devices/vfio0", os.O_RDWR)
    ictx = os.open(f"{mnt}/dev/iommu", os.O_RDWR)
    ioctl(dev, BIND, struct.pack("<IIiIQ", 24, 0, ictx, 0, 0))
    ioas = struct.unpack_from(
        "<III", ioctl(ictx, IOAS_ALLOC, struct.pack("<III", 12, 0, 0))
    )[2]
    ioctl(dev, ATTACH, struct.pack("<IIII", 16, 0, ioas, 0))
    return dev, ictx, ioas


def iomap(ictx: int, ioas: int, m: mmap.mmap, iova: int) -> None:
    ioctl(
        ictx,
        IOAS_MAP,
        struct.pack("<IIIIQQQ", 40, RW_FIXED, ioas, 0, addr(m), len(m), iova),
    )


def memcpy(dev: int, src: int, dst: int, n: int) -> int:
    os.pwrite(dev, struct.pack("<QQI", src, dst, n), BAR0)
    os.pwrite(dev, struct.pack("<I", 1), BAR0 + 0x14)
    return int(struct.unpack("<I", os.pread(dev, 4, BAR0 + 0x18))[0])


def main() -> None:
    mode = sys.argv[1]
    if mode == "hold":  # hold MNT [STAGE]: stop after STAGE steps of the cycle
        stage = int(sys.argv[3]) if len(sys.argv) > 3 else 9
        mnt = sys.argv[2]
        dev = os.open(f"{mnt}/dev/vfio/devices/vfio0", os.O_RDWR)
        ictx = os.open(f"{mnt}/dev/iommu", os.O_RDWR)
        steps = [
            lambda: ioctl(dev, BIND, struct.pack("<IIiIQ", 24, 0, ictx, 0, 0)),
            lambda: ioctl(ictx, IOAS_ALLOC, struct.pack("<III", 12, 0, 0)),
            lambda: ioctl(dev, ATTACH, struct.pack("<IIII", 16, 0, 2, 0)),
            lambda: iomap(ictx, 2, buf, 0x100000),
            lambda: ioctl(
                dev, SET_IRQS, struct.pack("<IIIIIi", 24, 4 | 32, 2, 0, 1, ev)
            ),
            lambda: memcpy(dev, 0x100000, 0x180000, 4096),
        ]
        buf = mmap.mmap(-1, 1 << 20)
        ev = os.eventfd(0)
        for step in steps[:stage]:
            step()
        print("ready", flush=True)
        time.sleep(3600)
    elif mode == "owner":
        dev, ictx, ioas = setup(sys.argv[2])
        src, dst = mmap.mmap(-1, 4096), mmap.mmap(-1, 4096)
        src[:] = b"A" * 4096
        iomap(ictx, ioas, src, 0x100000)
        iomap(ictx, ioas, dst, 0x200000)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(sys.argv[3])
        socket.send_fds(sock, [struct.pack("<I", ioas)], [dev, ictx])
        sock.recv(1)  # the peer is done
        print(
            dst[:4].decode(errors="replace"),
            src[:4].decode(errors="replace"),
            flush=True,
        )
    elif mode == "peer":
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(sys.argv[2])
        srv.listen(1)
        conn, _ = srv.accept()
        msg, (dev, ictx), _, _ = socket.recv_fds(conn, 4, 2)
        ioas = struct.unpack("<I", msg)[0]
        mine = mmap.mmap(-1, 4096)
        mine[:] = b"B" * 4096
        iomap(ictx, ioas, mine, 0x300000)
        st1 = memcpy(dev, 0x300000, 0x200000, 4096)  # B's bytes into A's destination
        st2 = memcpy(dev, 0x100000, 0x300000, 4096)  # A's bytes into B's own mapping
        print(st1, st2, mine[:4].decode(errors="replace"), flush=True)
        conn.send(b"x")


if __name__ == "__main__":
    main()
