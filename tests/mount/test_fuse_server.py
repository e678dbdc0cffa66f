"""The FUSE server on a real mount: tests/mount/echofs.py served by vfiofs.session."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import stat
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.mount

ECHOFS = str(Path(__file__).with_name("echofs.py"))


def _IO(t: str, nr: int) -> int:
    return (ord(t) << 8) | nr


ECHO_NOOP, ECHO_STRUCT, ECHO_FD, ECHO_WAIT, ECHO_SERIAL = (
    _IO("E", n) for n in range(5)
)


def ioctl_ptr(fd: int, cmd: int, data: bytes) -> int:
    """ioctl with a pointer to a copy of ``data``; returns the ioctl's result."""
    return fcntl.ioctl(fd, cmd, bytearray(data), True)


@pytest.fixture
def echofs(start_daemon):  # type: ignore[no-untyped-def]
    return start_daemon([ECHOFS, "{mnt}"])


def test_stat_modes_sizes_and_links(echofs) -> None:  # type: ignore[no-untyped-def]
    mnt = echofs.mountpoint
    st = os.stat(mnt / "dev/echo")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666
    assert stat.S_IMODE(os.stat(mnt / "dev/private").st_mode) == 0o600
    ro = os.stat(mnt / "attrs/ro")
    assert (stat.S_IMODE(ro.st_mode), ro.st_size, ro.st_uid) == (0o444, 4096, 0)
    assert stat.S_ISDIR(os.stat(mnt / "attrs").st_mode)
    assert os.lstat(mnt / "link").st_mode & stat.S_IFLNK
    # inode numbers stay the same for the life of the mount
    assert os.stat(mnt / "dev/echo").st_ino == os.stat(mnt / "dev/echo").st_ino


def test_readdir_readlink_and_read(echofs) -> None:  # type: ignore[no-untyped-def]
    mnt = echofs.mountpoint
    assert sorted(os.listdir(mnt)) == ["attrs", "dev", "link"]
    assert sorted(os.listdir(mnt / "attrs")) == ["opens", "ro", "rw"]
    assert os.readlink(mnt / "link") == "attrs/ro"
    assert (mnt / "link").read_bytes() == b"0x1234\n"
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "nope")


def test_attribute_write_and_read_only(echofs) -> None:  # type: ignore[no-untyped-def]
    mnt = echofs.mountpoint
    (mnt / "attrs/rw").write_bytes(b"new value\n")  # open(O_TRUNC) + write, like echo >
    assert (mnt / "attrs/rw").read_bytes() == b"new value\n"
    with pytest.raises(PermissionError):
        (mnt / "attrs/ro").write_bytes(b"x")
    with pytest.raises(PermissionError):
        os.chmod(mnt / "attrs/rw", 0o777)


def test_ioctl_reads_and_writes_caller_struct(echofs) -> None:  # type: ignore[no-untyped-def]
    fd = os.open(echofs.mountpoint / "dev/echo", os.O_RDWR)
    try:
        assert fcntl.ioctl(fd, ECHO_NOOP) == 0
        buf = bytearray(range(64))
        assert fcntl.ioctl(fd, ECHO_STRUCT, buf, True) == 42
        assert buf == bytearray(range(1, 65))
        with pytest.raises(OSError) as e:
            fcntl.ioctl(fd, ECHO_STRUCT, 0x10)  # a bad pointer
        assert e.value.errno == errno.EFAULT
        with pytest.raises(OSError) as e:
            fcntl.ioctl(fd, _IO("E", 99))
        assert e.value.errno == errno.ENOTTY
    finally:
        os.close(fd)


def test_fd_inside_ioctl_resolved_to_the_right_handle(echofs) -> None:  # type: ignore[no-untyped-def]
    path = echofs.mountpoint / "dev/echo"
    a, b = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    null = os.open("/dev/null", os.O_RDWR)
    ev = os.eventfd(0)
    try:
        sa, sb = fcntl.ioctl(a, ECHO_SERIAL), fcntl.ioctl(b, ECHO_SERIAL)
        assert sa != sb
        assert ioctl_ptr(a, ECHO_FD, struct.pack("i", b)) == sb
        assert ioctl_ptr(b, ECHO_FD, struct.pack("i", a)) == sa
        assert ioctl_ptr(a, ECHO_FD, struct.pack("i", ev)) == 1000
        assert os.eventfd_read(ev) == 1
        for bad, err in ((null, errno.EBADFD), (999, errno.EBADF), (-1, errno.EBADF)):
            with pytest.raises(OSError) as e:
                ioctl_ptr(a, ECHO_FD, struct.pack("i", bad))
            assert e.value.errno == err
    finally:
        for fd in (a, b, null, ev):
            os.close(fd)


def test_release_reaches_the_daemon(echofs) -> None:  # type: ignore[no-untyped-def]
    mnt = echofs.mountpoint
    fd = os.open(mnt / "dev/echo", os.O_RDWR)
    os.close(fd)
    deadline = time.monotonic() + 10  # RELEASE reaches the daemon after close() returns
    while (mnt / "attrs/opens").read_text() != "1 1\n" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (mnt / "attrs/opens").read_text() == "1 1\n"


def test_poll_wakes_up_on_data(echofs) -> None:  # type: ignore[no-untyped-def]
    path = echofs.mountpoint / "dev/echo"
    r, w = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        p = select.poll()
        p.register(r, select.POLLIN)
        assert p.poll(0) == []
        threading.Timer(0.2, os.write, (w, b"x")).start()
        t0 = time.monotonic()
        assert p.poll(10_000) == [(r, select.POLLIN)]
        assert time.monotonic() - t0 < 5
        assert os.read(r, 10) == b"x"
    finally:
        os.close(r)
        os.close(w)


def test_blocking_read_woken_by_write(echofs) -> None:  # type: ignore[no-untyped-def]
    path = echofs.mountpoint / "dev/echo"
    r, w = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        threading.Timer(0.2, os.write, (w, b"hello")).start()
        assert os.read(r, 5) == b"hello"
    finally:
        os.close(r)
        os.close(w)


def test_c_client(echofs, compile_c) -> None:  # type: ignore[no-untyped-def]
    exe = compile_c("fuseclient")
    path = str(echofs.mountpoint / "dev/echo")

    def run(cmd: str) -> str:
        return subprocess.run(
            [exe, cmd, path], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()

    assert run("struct") == "ret=42 ok=1"
    assert run("efault") == "ret=-1 errno=EFAULT"
    assert run("enotty") == "ret=-1 errno=ENOTTY"
    out = dict(kv.split("=") for kv in run("fdpass").split() if "=" in kv)
    assert out["resolved"] == out["theirs"] != out["mine"]
    assert (out["eventfd"], out["count"], out["badfd"]) == ("1000", "1", "-1")
    assert run("fdpass").endswith("EBADF")
    # an interrupted blocking request: the caller sees EINTR and the daemon goes on
    assert run("eintr") == "read=-1 errno=EINTR next=0"


def test_private_node_refused_to_unprivileged_user(start_daemon, public_dir) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon([ECHOFS, "{mnt}"], mountpoint=public_dir / "m")
    code = (
        "import os, sys\n"
        "for p in sys.argv[1:]:\n"
        "    try: os.close(os.open(p, os.O_RDWR)); print('ok')\n"
        "    except PermissionError: print('EACCES')\n"
    )
    paths = [str(d.mountpoint / "dev/echo"), str(d.mountpoint / "dev/private")]
    out = subprocess.run(
        ["/usr/bin/python3", "-c", code, *paths],
        capture_output=True,
        text=True,
        user=65534,
        group=65534,
        check=True,
    ).stdout
    assert out.split() == [
        "ok",
        "EACCES",
    ]  # allow_other + default_permissions, as sysfs/devtmpfs


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_daemon_signal_unmounts_cleanly(start_daemon, mounted, sig) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon([ECHOFS, "{mnt}"])
    fd = os.open(d.mountpoint / "dev/echo", os.O_RDWR)
    d.proc.send_signal(sig)
    d.proc.wait(timeout=10)
    assert not mounted(d.mountpoint)
    with pytest.raises(OSError):
        fcntl.ioctl(fd, ECHO_NOOP)
    os.close(fd)
