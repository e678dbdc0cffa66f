"""Faults and isolation: a client killed at any point leaves nothing behind; DMA reaches
only the process that created the mapping; group nodes are root's."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.uapi import build_example

pytestmark = pytest.mark.mount

CLIENT = str(Path(__file__).with_name("vfio_client.py"))


@pytest.fixture
def mnt(start_daemon):  # type: ignore[no-untyped-def]
    return start_daemon(["-m", "vfiofs", "mount", "{mnt}"]).mountpoint


def wait(cond, what: str, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture(scope="module")
def shared_mnt(start_module_daemon):  # type: ignore[no-untyped-def]
    return start_module_daemon(["-m", "vfiofs", "mount", "{mnt}"]).mountpoint


# One daemon for all stages: each stage starts by checking there is no mapping but its
# own and ends once the mapping and the binding are gone, so a leak fails the next one.
@pytest.mark.parametrize("stage", range(7))
def test_sigkill_at_any_point_leaves_no_mapping_binding_or_eventfd(
    shared_mnt: Path, stage: int
) -> None:
    mnt = shared_mnt
    mappings = mnt / "sys/kernel/debug/vfiofs/iommu_groups/0/mappings"
    for _ in range(2):
        p = subprocess.Popen(
            [sys.executable, CLIENT, "hold", str(mnt), str(stage)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        assert mappings.read_text().count("\n") == (1 if stage >= 4 else 0)
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        wait(lambda: mappings.read_text() == "", "the mapping is gone")

        def group_free() -> bool:
            try:
                os.close(os.open(mnt / "dev/vfio/0", os.O_RDWR))
            except OSError as e:
                assert e.errno == errno.EBUSY
                return False
            return True

        wait(group_free, "the cdev binding is gone: the group opens again")


def test_dma_reaches_only_the_mapping_process(mnt: Path, tmp_path: Path) -> None:
    sock = str(tmp_path / "sock")
    peer = subprocess.Popen(
        [sys.executable, CLIENT, "peer", sock], stdout=subprocess.PIPE, text=True
    )
    wait(lambda: os.path.exists(sock), "peer listening")
    owner = subprocess.run(
        [sys.executable, CLIENT, "owner", str(mnt), sock],
        capture_output=True,
        text=True,
        timeout=30,
    )
    out, _ = peer.communicate(timeout=30)
    assert owner.returncode == 0, owner.stderr
    # the owner's destination got B's bytes, the owner's source is untouched
    assert owner.stdout.split() == ["BBBB", "AAAA"]
    # both copies completed; B's own mapping received A's bytes only through B's IOVA
    assert out.split() == ["2", "2", "AAAA"]


def test_group_nodes_refuse_unprivileged_users(start_daemon, public_dir: Path) -> None:  # type: ignore[no-untyped-def]
    mnt = start_daemon(
        ["-m", "vfiofs", "mount", "{mnt}"], mountpoint=public_dir / "m"
    ).mountpoint
    code = (
        "import os, sys\n"
        "for p in sys.argv[1:]:\n"
        "    try: os.close(os.open(p, os.O_RDWR)); print('ok')\n"
        "    except PermissionError: print('EACCES')\n"
    )
    nodes = [
        mnt / "dev/vfio/0",
        mnt / "dev/vfio/devices/vfio0",
        mnt / "dev/iommu",
        mnt / "dev/vfio/vfio",
    ]
    r = subprocess.run(
        ["/usr/bin/python3", "-c", code, *map(str, nodes)],
        capture_output=True,
        text=True,
        user=65534,
        group=65534,
        check=True,
    )
    assert r.stdout.split() == [
        "EACCES",
        "EACCES",
        "EACCES",
        "ok",
    ]  # only the container is 0666


def test_stopped_client_does_not_block_others(mnt: Path, tmp_path: Path) -> None:
    p = subprocess.Popen(
        [sys.executable, CLIENT, "hold", str(mnt)], stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGSTOP)
    try:
        # another process uses another device of another group meanwhile
        exe = build_example("cdev_iommufd", tmp_path)
        r = subprocess.run(
            [exe, "0000:00:05.0"],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(os.environ, VFIO_ROOT=str(mnt)),
        )
        assert r.returncode == 0, r.stdout
        # and the stopped client's group stays its own
        with pytest.raises(OSError) as e:
            os.open(mnt / "dev/vfio/0", os.O_RDWR)
        assert e.value.errno == errno.EBUSY
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()


def test_run_traps_only_get_device_fd_on_our_files() -> None:
    code = (
        "import fcntl, os\n"
        "fd = os.open('/dev/null', os.O_RDWR)\n"
        "for cmd in (0x3B6A, 0x3B64):\n"
        "    try: fcntl.ioctl(fd, cmd, bytearray(b'0000:00:04.0\\0'), True); print('ok')\n"
        "    except OSError as e: print(e.errno)\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "vfiofs", "run", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # /dev/null is not ours: the trapped call continues to the real driver (ENOTTY)
    assert r.stdout.split() == [str(errno.ENOTTY), str(errno.ENOTTY)], r.stderr


def test_doctor_reports_every_feature() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "vfiofs", "doctor"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = r.stdout.splitlines()
    names = [
        "FUSE",
        "fusermount3",
        "pidfd_getfd",
        "seccomp user notification",
        "namespaces",
        "ptrace access",
        "overlayfs",
    ]
    assert [any(n in line for line in lines) for n in names] == [True] * len(names)
    assert r.returncode == 0, r.stdout  # this machine (and CI) has all of them
