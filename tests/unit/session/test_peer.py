"""The caller-memory path of vfiofs.session.peer, on this test process itself."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import resource
import select

import pytest

from vfiofs.errors import KernelError
from vfiofs.session import peer


@pytest.fixture
def mm():  # type: ignore[no-untyped-def]
    m = peer.ProcessMemory(os.getpid())
    yield m
    m.close()


def address(buf: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def test_write_live_small_and_large_then_small_again(mm) -> None:  # type: ignore[no-untyped-def]
    page = mmap.mmap(-1, 3 * 4096)
    addr = address(page)
    mm.write_live(addr, b"abc")
    mm.write_live(addr + 100, bytes(range(256)) * 40)  # larger than the bounce buffer
    mm.write_live(addr + 8, b"xyz")  # the bounce buffer is used again
    assert page[:3] == b"abc" and page[8:11] == b"xyz"
    assert page[100 : 100 + 10240] == bytes(range(256)) * 40
    assert mm.read(addr, 3) == b"abc"


def test_write_to_a_read_only_page_is_efault_and_writes_nothing(mm) -> None:  # type: ignore[no-untyped-def]
    page = mmap.mmap(-1, 4096)
    addr = address(page)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(addr), 4096, mmap.PROT_READ) == 0
    with pytest.raises(KernelError) as e:
        mm.write_live(addr, b"x" * 8)
    assert e.value.errno == errno.EFAULT
    assert ctypes.string_at(addr, 8) == bytes(8)
    assert (
        libc.mprotect(ctypes.c_void_p(addr), 4096, mmap.PROT_READ | mmap.PROT_WRITE)
        == 0
    )


def test_memlock_limit_falls_back_to_proc_limits(mm, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    expected = -1 if soft == resource.RLIM_INFINITY else soft

    def refused(*args: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(peer.resource, "prlimit", refused)
    assert mm.memlock_limit() == expected


def test_memlock_limit_unreadable_is_esrch_not_zero(mm, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    def refused(*args: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    def gone(tgid: int) -> int:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(peer.resource, "prlimit", refused)
    monkeypatch.setattr(peer, "_memlock_from_limits", gone)
    with pytest.raises(KernelError) as e:
        mm.memlock_limit()
    assert e.value.errno == errno.ESRCH
    assert "RLIMIT_MEMLOCK" in caplog.text


def test_capable_of_a_gone_task_is_false_with_a_warning(caplog) -> None:  # type: ignore[no-untyped-def]
    assert peer.capable(2**22 + 12345, 21) is False
    assert "capabilities of task" in caplog.text


def test_cached_memory_of_an_exited_process_is_renewed_on_read() -> None:
    """A pid whose cached ProcessMemory belongs to a process that exited: the next
    read notices and reads the live process instead."""
    import subprocess
    import sys

    table = peer.ProcessTable()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = table.memory(child.pid)
        stale.close()
        # make it the memory of a process that exited (its pidfd readable, its
        # /proc/PID/mem gone), as when the pid was recycled
        gone = subprocess.Popen(["true"])
        stale._pidfd = os.pidfd_open(gone.pid)
        gone.wait()
        stale._poller = select.poll()
        stale._poller.register(stale._pidfd, select.POLLIN)
        caller = peer.RequestCaller(child.pid, 0, 0, table)
        with open(f"/proc/{child.pid}/maps") as f:
            lo = int(f.readline().split("-")[0], 16)
        assert len(caller.copy_from_user(lo, 4)) == 4
        assert table.memory(child.pid) is not stale
    finally:
        child.kill()
        child.wait()
        table.close()
