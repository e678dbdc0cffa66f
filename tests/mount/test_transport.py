"""The two transports on a real mount: FUSE over io_uring and /dev/fuse read/write.

The whole mount suite runs once per transport (`make test`); these tests check what only
the choice itself decides: which transport ``auto`` picks, that requests really go
through the ring, one queue per CPU, parked requests holding ring entries, and a clean
refusal when io_uring is asked for and the kernel does not offer it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.transport import fuse_uring_parameter, uring_unavailable

pytestmark = pytest.mark.mount

ECHOFS = str(Path(__file__).with_name("echofs.py"))
ECHO_NOOP, ECHO_STRUCT, ECHO_WAIT = (ord("E") << 8 | n for n in (0, 1, 3))


@pytest.fixture
def uring_on() -> Iterator[None]:
    why = uring_unavailable()
    if why is not None:
        pytest.skip(why)
    with fuse_uring_parameter(True):
        yield


def ring_fds(pid: int) -> list[int]:
    """One fd of each io_uring instance the daemon holds (Python's mmap keeps dups)."""
    out: dict[int, int] = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") == "anon_inode:[io_uring]":
                out.setdefault(os.stat(f"/proc/{pid}/fd/{name}").st_ino, int(name))
        except OSError:
            continue
    return list(out.values())


def cq_tail(pid: int, fd: int) -> int:
    """Completions the kernel has posted on the ring (fdinfo's CqTail)."""
    for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("CqTail:"):
            return int(line.split()[1])
    raise AssertionError("no CqTail in fdinfo")


def wait_for_log(daemon, text: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while text not in daemon.output():
        assert time.monotonic() < deadline, f"no {text!r} in:\n{daemon.output()}"
        time.sleep(0.01)


def struct_call(path: Path, n: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        for i in range(n):
            buf = bytearray((i + j) & 0xFF for j in range(64))
            assert fcntl.ioctl(fd, ECHO_STRUCT, buf, True) == 42
            assert buf == bytearray((i + j + 1) & 0xFF for j in range(64))
    finally:
        os.close(fd)


def start_echofs(start_daemon, monkeypatch, transport: str):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VFIOFS_TRANSPORT", transport)
    return start_daemon([ECHOFS, "{mnt}"])


def test_uring_requests_go_through_the_ring(
    start_daemon, monkeypatch, uring_on
) -> None:  # type: ignore[no-untyped-def]
    d = start_echofs(start_daemon, monkeypatch, "uring")
    wait_for_log(d, "over uring")
    (ring,) = ring_fds(d.proc.pid)
    before = cq_tail(d.proc.pid, ring)
    struct_call(d.mountpoint / "dev/echo", 200)
    # one completion per request fetched from the ring (open, 200 ioctls, ...)
    assert cq_tail(d.proc.pid, ring) - before >= 200


def test_auto_picks_uring_only_when_the_kernel_offers_it(
    start_daemon, monkeypatch, uring_on
) -> None:  # type: ignore[no-untyped-def]
    d = start_echofs(start_daemon, monkeypatch, "auto")
    wait_for_log(d, "over uring")
    assert ring_fds(d.proc.pid)
    with fuse_uring_parameter(False):
        d2 = start_echofs(start_daemon, monkeypatch, "auto")
        wait_for_log(d2, "over dev")
    assert not ring_fds(d2.proc.pid)
    struct_call(d.mountpoint / "dev/echo", 10)
    struct_call(d2.mountpoint / "dev/echo", 10)


def test_uring_asked_for_but_not_offered_fails_cleanly(tmp_path: Path, mounted) -> None:  # type: ignore[no-untyped-def]
    if uring_unavailable() is not None:
        pytest.skip(uring_unavailable())
    mnt = tmp_path / "m"
    mnt.mkdir()
    with fuse_uring_parameter(False):
        r = subprocess.run(
            [sys.executable, "-m", "vfiofs", "mount", "--transport=uring", str(mnt)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 1
    assert "enable_uring is N" in r.stderr
    assert "Traceback" not in r.stderr
    assert not mounted(mnt)


def test_parked_requests_grow_the_ring(start_daemon, monkeypatch, uring_on) -> None:  # type: ignore[no-untyped-def]
    """More blocked requests on one CPU than the queue has entries: each holds its
    entry, the daemon registers more, and requests after them are still served."""
    d = start_echofs(start_daemon, monkeypatch, "uring")
    (ring,) = ring_fds(d.proc.pid)
    path = d.mountpoint / "dev/echo"
    results: list[int] = []

    def waiter() -> None:
        os.sched_setaffinity(0, {0})  # this thread: its requests land on queue 0
        fd = os.open(path, os.O_RDWR)
        try:
            results.append(fcntl.ioctl(fd, ECHO_WAIT, 0))
        finally:
            os.close(fd)

    threads = []
    for _ in range(12):  # one at a time: each parks before the next one comes
        before = cq_tail(d.proc.pid, ring)
        threads.append(threading.Thread(target=waiter))
        threads[-1].start()
        deadline = time.monotonic() + 30
        while cq_tail(d.proc.pid, ring) < before + 2:  # its OPEN and its IOCTL
            assert time.monotonic() < deadline, "a request was not fetched"
            time.sleep(0.01)
    done = threading.Event()
    fd = os.open(path, os.O_RDWR)
    try:

        def noop_on_cpu0() -> None:
            os.sched_setaffinity(0, {0})
            assert fcntl.ioctl(fd, ECHO_NOOP, 0) == 0
            done.set()

        threading.Thread(target=noop_on_cpu0).start()
        assert done.wait(30), "a request behind 12 parked ones was not served"
        os.write(fd, b"x")  # wakes every waiter
        for t in threads:
            t.join(30)
        assert results == [1] * 12
    finally:
        os.close(fd)


def test_two_clients_on_two_cpus(start_daemon, monkeypatch, uring_on) -> None:  # type: ignore[no-untyped-def]
    """One queue per CPU: clients pinned to CPU 0 and CPU 1 are served at once."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    d = start_echofs(start_daemon, monkeypatch, "uring")
    code = (
        "import os, sys, fcntl\n"
        "os.sched_setaffinity(0, {int(sys.argv[2])})\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "for i in range(300):\n"
        "    b = bytearray(range(64))\n"
        f"    assert fcntl.ioctl(fd, {ECHO_STRUCT}, b, True) == 42\n"
        "    assert b == bytearray(range(1, 65))\n"
    )
    path = str(d.mountpoint / "dev/echo")
    procs = [
        subprocess.Popen([sys.executable, "-c", code, path, str(cpu)]) for cpu in (0, 1)
    ]
    assert [p.wait(60) for p in procs] == [0, 0]
