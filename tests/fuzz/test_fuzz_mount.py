"""A fuzzer through the real mount: random VFIO and iommufd ioctls, with random argsz,
flags, pointers (valid, NULL, unmapped, read-only, straddling the end of a mapping) and fd
numbers, in random sequences across container, group, cdev, iommufd and device fds.

Every call must answer with a result or an errno the kernel could give, never write past
argsz (a canary follows each argument), never crash or hang the daemon; after the
campaign, the same daemon must hold no mapping and every group must open again.
`make fuzz N=CALLS` runs a long campaign and prints its errno histogram.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import faulthandler
import mmap
import os
import struct
import time
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

pytestmark = pytest.mark.mount

# VFIOFS_FUZZ_CALLS (`make fuzz N=...`) makes a campaign of that many ioctl calls, which
# prints how many calls it made and how each ended; the suite makes 250 calls.
CAMPAIGN = "VFIOFS_FUZZ_CALLS" in os.environ
CALLS = int(os.environ.get("VFIOFS_FUZZ_CALLS", "250"))
BATCH = 200  # sequences per hypothesis run; runs repeat until CALLS calls are made
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


@attrs.define
class Stats:
    """What a campaign did: ioctl calls, and how each one ended."""

    sequences: int = 0
    calls: int = 0
    results: collections.Counter[str] = attrs.Factory(collections.Counter)

    def record(self, rc: int, err: int) -> None:
        self.calls += 1
        self.results["ok" if rc >= 0 else errno.errorcode.get(err, str(err))] += 1

    def report(self) -> str:
        width = max(map(len, self.results), default=2)
        lines = [
            f"fuzz: {self.calls} ioctl calls in {self.sequences} sequences",
            "fuzz: results (errno histogram):",
        ]
        lines += [f"  {name:<{width}} {n:>9}" for name, n in self.results.most_common()]
        return "\n".join(lines)


def run_sequence(client: Client, mnt: Path, seq: list, stats: Stats) -> None:  # type: ignore[type-arg]
    """One hypothesis example: open, set up, ioctl and close as ``seq`` says."""
    stats.sequences += 1
    for kind, which, cmd, ptr, argsz, rest, fd in seq:
        if kind == "open":
            try:
                client.fds.append(os.open(mnt / NODES[which % len(NODES)], os.O_RDWR))
            except OSError as e:
                assert e.errno in KERNEL_ERRNOS, e
            continue
        if kind == "setup":  # a valid prefix, so that random calls reach deeper state
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
        body = body[:8] + struct.pack("<i", fd) + body[12:] if len(body) >= 12 else body
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
        err = ctypes.get_errno() if rc < 0 else 0
        stats.record(rc, err)
        if rc < 0:
            assert err in KERNEL_ERRNOS, (hex(cmd), ptr, errno.errorcode.get(err))
        if ptr == "rw":
            sent = body + CANARY
            after = bytes(client.rw[: len(sent)])
            assert after[argsz:] == sent[argsz:], (
                f"wrote past argsz {argsz}: cmd {cmd:#x}"
            )


def assert_nothing_left(mnt: Path) -> None:
    """With every fd closed: no mapping left and every group opens again (releases reach
    the daemon asynchronously, so this waits for them)."""
    deadline = time.monotonic() + 60
    for g in ("0", "1"):
        mappings = mnt / f"sys/kernel/debug/vfiofs/iommu_groups/{g}/mappings"
        while mappings.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mappings.read_text() == "", f"group {g} still has mappings"
        while True:
            try:
                os.close(os.open(mnt / f"dev/vfio/{g}", os.O_RDWR))
                break
            except OSError as e:
                assert e.errno == errno.EBUSY and time.monotonic() < deadline, e
                time.sleep(0.02)


@pytest.fixture
def fuzz_mount(start_daemon):  # type: ignore[no-untyped-def]
    if CAMPAIGN:
        # pytest's faulthandler_timeout would dump every thread's stack mid-campaign,
        # which is unsafe with threads running (it has ended campaigns with SIGSEGV);
        # a campaign runs as long as it must
        faulthandler.cancel_dump_traceback_later()
    return start_daemon(["-m", "vfiofs", "mount", "{mnt}"])


def test_fuzz_ioctls_through_the_mount(fuzz_mount, capsys) -> None:  # type: ignore[no-untyped-def]
    """Random sequences until CALLS ioctl calls are made, all on one daemon; then that
    daemon must hold nothing and have logged no bug."""
    mnt, proc = fuzz_mount.mountpoint, fuzz_mount.proc
    stats = Stats()
    client = Client()

    @settings(
        max_examples=BATCH,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(ops)
    def batch(seq) -> None:  # type: ignore[no-untyped-def]
        try:
            run_sequence(client, mnt, seq, stats)
        finally:
            client.close_all()
        assert proc.poll() is None, "the daemon died"

    while stats.calls < CALLS:
        batch()
    assert_nothing_left(mnt)
    assert proc.poll() is None, "the daemon died"
    out = fuzz_mount.output()
    assert "Traceback" not in out
    assert "bug while" not in out
    if CAMPAIGN:
        with capsys.disabled():
            print("\n" + stats.report(), flush=True)
