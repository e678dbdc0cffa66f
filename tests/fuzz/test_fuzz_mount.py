"""A fuzzer through the real mount: random VFIO and iommufd ioctls, with random argsz,
flags, pointers (valid, NULL, unmapped, read-only, straddling the end of a mapping) and fd
numbers, in random sequences across container, group, cdev, iommufd and device fds.

Every call must answer with a result or an errno the kernel could give, never write past
argsz (a canary follows each argument), never crash or hang the daemon; after each run,
closing everything must leave no mapping and every group reopenable.
`make fuzz` runs a long campaign (VFIOFS_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

pytestmark = pytest.mark.mount

EXAMPLES = int(os.environ.get("VFIOFS_FUZZ_EXAMPLES", "150"))
KERNEL_ERRNOS = {
    errno.EINVAL,
    errno.EFAULT,
    errno.ENOTTY,
    errno.EBADF,
    errno.EBADFD,
    errno.EBUSY,
    errno.ENODEV,
    errno.ENOENT,
    errno.EEXIST,
    errno.ENOSPC,
    errno.ENOMEM,
    errno.EOVERFLOW,
    errno.E2BIG,
    errno.EOPNOTSUPP,
    errno.EMSGSIZE,
    errno.EPERM,
    errno.EACCES,
    errno.EADDRINUSE,
}
CMDS = (
    [0x3B00 | n for n in range(100, 122)]
    + [0x3B00 | n for n in range(0x80, 0x95)]
    + [0x3BFF, 0x1234]
)
NODES = [
    "dev/vfio/vfio",
    "dev/vfio/0",
    "dev/vfio/1",
    "dev/iommu",
    "dev/vfio/devices/vfio0",
    "dev/vfio/devices/vfio1",
]
CANARY = b"\xa5" * 64


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
)
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)


class Client:
    """The fuzzing process's side: fds, and memory of every kind."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.rw = mmap.mmap(-1, 1 << 16)
        self.rw_addr = ctypes.addressof(ctypes.c_char.from_buffer(self.rw))
        self.ro_addr = int(
            _libc.mmap(
                None, 4096, mmap.PROT_READ, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0
            )
        )

    def close_all(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def _call(fd: int, cmd: int, data: bytes | int) -> int:
    if isinstance(data, int):
        return int(_libc.ioctl(fd, ctypes.c_ulong(cmd), ctypes.c_void_p(data)))
    buf = ctypes.create_string_buffer(data, len(data))
    return int(_libc.ioctl(fd, ctypes.c_ulong(cmd), ctypes.cast(buf, ctypes.c_void_p)))


def setup(client: Client, mnt: Path, kind: int) -> None:
    """kind 0: container + group 0 + type1v2; kind 1: cdev vfio1 bound to an iommufd
    with an IOAS attached. Failures (EBUSY from an earlier run of the sequence) are fine."""
    try:
        if kind == 0:
            c = os.open(mnt / "dev/vfio/vfio", os.O_RDWR)
            client.fds.append(c)
            g = os.open(mnt / "dev/vfio/0", os.O_RDWR)
            client.fds.append(g)
            _call(g, 0x3B68, struct.pack("<i", c))
            _call(c, 0x3B66, 3)
        else:
            d = os.open(mnt / "dev/vfio/devices/vfio1", os.O_RDWR)
            client.fds.append(d)
            i = os.open(mnt / "dev/iommu", os.O_RDWR)
            client.fds.append(i)
            _call(d, 0x3B76, struct.pack("<IIiIQ", 24, 0, i, 0, 0))
            _call(i, 0x3B81, struct.pack("<III", 12, 0, 0))
            _call(d, 0x3B77, struct.pack("<IIII", 16, 0, 2, 0))
    except OSError as e:
        assert e.errno in KERNEL_ERRNOS


ops = st.lists(
    st.tuples(
        st.sampled_from(["open", "ioctl", "ioctl", "ioctl", "close", "setup"]),
        st.integers(0, 20),  # which node / fd
        st.sampled_from(CMDS),
        st.sampled_from(
            ["rw", "rw", "rw", "null", "unmapped", "ro", "straddle", "value"]
        ),
        st.integers(0, 96),  # argsz / size field
        st.binary(min_size=0, max_size=64),  # the rest of the struct
        st.integers(-2, 40),  # an fd number planted in the struct
    ),
    max_size=30,
)


@pytest.fixture
def fuzz_mount(start_daemon):  # type: ignore[no-untyped-def]
    return start_daemon(["-m", "vfiofs", "mount", "{mnt}"])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops)
def test_fuzz_ioctls_through_the_mount(fuzz_mount, seq) -> None:  # type: ignore[no-untyped-def]
    mnt, proc = fuzz_mount.mountpoint, fuzz_mount.proc
    client = Client()
    try:
        for kind, which, cmd, ptr, argsz, rest, fd in seq:
            if kind == "open":
                try:
                    client.fds.append(
                        os.open(mnt / NODES[which % len(NODES)], os.O_RDWR)
                    )
                except OSError as e:
                    assert e.errno in KERNEL_ERRNOS, e
                continue
            if (
                kind == "setup"
            ):  # a valid prefix, so that random calls reach deeper state
                setup(client, mnt, which % 2)
                continue
            if not client.fds:
                continue
            target = client.fds[which % len(client.fds)]
            if kind == "close":
                os.close(target)
                client.fds.remove(target)
                continue
            body = struct.pack("<I", argsz) + rest
            body = (
                body[:8] + struct.pack("<i", fd) + body[12:]
                if len(body) >= 12
                else body
            )
            arg = 0
            if ptr == "rw":
                client.rw[: len(body) + len(CANARY)] = body + CANARY
                arg = client.rw_addr
            elif ptr == "unmapped":
                arg = 0x10
            elif ptr == "ro":
                arg = client.ro_addr
            elif ptr == "straddle":  # the struct runs off the end of the mapping
                client.rw[-4:] = body[:4].ljust(4, b"\0")
                arg = client.rw_addr + len(client.rw) - 4
            elif ptr == "value":
                arg = argsz
            rc = _libc.ioctl(target, ctypes.c_ulong(cmd), ctypes.c_void_p(arg))
            if rc < 0:
                err = ctypes.get_errno()
                assert err in KERNEL_ERRNOS, (hex(cmd), ptr, errno.errorcode.get(err))
            if ptr == "rw":
                sent = body + CANARY
                after = bytes(client.rw[: len(sent)])
                assert after[argsz:] == sent[argsz:], (
                    f"wrote past argsz {argsz}: cmd {cmd:#x}"
                )
            assert proc.poll() is None, "the daemon died"
    finally:
        client.close_all()
    out = fuzz_mount.output()
    assert "Traceback" not in out
    assert "bug while" not in out


def test_fuzz_leaves_nothing_behind(fuzz_mount) -> None:  # type: ignore[no-untyped-def]
    import time

    mnt, proc = fuzz_mount.mountpoint, fuzz_mount.proc
    deadline = time.monotonic() + 10
    for g in ("0", "1"):
        while (
            mnt / f"sys/kernel/debug/vfiofs/iommu_groups/{g}/mappings"
        ).read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (
            mnt / f"sys/kernel/debug/vfiofs/iommu_groups/{g}/mappings"
        ).read_text() == ""
        while True:  # releases are asynchronous: the group becomes free again
            try:
                os.close(os.open(mnt / f"dev/vfio/{g}", os.O_RDWR))
                break
            except OSError as e:
                assert e.errno == errno.EBUSY and time.monotonic() < deadline
                time.sleep(0.02)
    assert proc.poll() is None
