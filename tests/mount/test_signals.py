"""Signals from the moment the mount exists: SIGINT or SIGTERM to `vfiofs mount` at any
point (before INIT, during it, idle, in the middle of requests) gives a clean unmount and
exit status 0; SIGTERM or SIGHUP to `vfiofs run` reaches CMD (also before CMD exists) and
leaves no mount. Each case runs at many points after the mount appears, on a machine kept
busy by CPU hogs. Nothing here measures time: the delays only spread the points."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import ROOT, is_mounted, mounts_under, wait_for_mount

pytestmark = pytest.mark.mount

VFIO_GET_API_VERSION = 0x3B64
# seconds between "the mount appeared" and the signal
POINTS = (0, 0, 0, 0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.03, 0.1, 0.3)


class Requests(threading.Thread):
    """A client making requests on the mount in a loop until stopped (errors once the
    daemon is gone are expected and end nothing)."""

    def __init__(self, mnt: Path) -> None:
        super().__init__(daemon=True)
        self.mnt = mnt
        self.done = 0
        self.first = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                os.stat(self.mnt / "dev/vfio/vfio")
                (self.mnt / "sys/bus/pci/devices/0000:00:04.0/vendor").read_bytes()
                fd = os.open(self.mnt / "dev/vfio/vfio", os.O_RDWR)
                try:
                    fcntl.ioctl(fd, VFIO_GET_API_VERSION)
                finally:
                    os.close(fd)
                self.done += 1
                self.first.set()
            except OSError:
                self.first.set()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_mount_signal_at_any_moment_unmounts_and_exits_0(
    sig: int, tmp_path: Path, cpu_hog: None
) -> None:
    failures = []
    served = 0
    for i, delay in enumerate(POINTS):
        mnt = tmp_path / f"m{i}"
        mnt.mkdir()
        p = subprocess.Popen(
            [sys.executable, "-m", "vfiofs", "mount", "--quiet", str(mnt)],
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        client = None
        try:
            wait_for_mount(mnt, p)  # the moment the mount exists (INIT may be ahead)
            if i % 2:  # every other point: in the middle of a stream of requests
                client = Requests(mnt)
                client.start()
                client.first.wait(60)
            time.sleep(delay)
            p.send_signal(sig)
            _, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            if client is not None:
                client.stop.set()
                client.join(60)
                served += client.done
        stderr = err.decode(errors="replace")
        if p.returncode != 0 or "Traceback" in stderr or is_mounted(mnt):
            failures.append(
                f"point {i} ({delay} s{', busy' if client else ''}): status "
                f"{p.returncode}, mounted {is_mounted(mnt)}\n{stderr}"
            )
            if is_mounted(mnt):
                subprocess.run(["umount", "-l", str(mnt)], check=False)
    assert not failures, "\n".join(failures)
    assert served > 0  # the busy points did have requests in flight


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_run_signal_reaches_cmd_and_leaves_no_mount(
    sig: int, tmp_path: Path, cpu_hog: None
) -> None:
    failures = []
    for i, delay in enumerate(POINTS[::2]):
        staging = tmp_path / f"t{i}"  # vfiofs run stages its mount under TMPDIR
        staging.mkdir()
        p = subprocess.Popen(
            [sys.executable, "-m", "vfiofs", "run", "--", "sleep", "600"],
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=dict(os.environ, TMPDIR=str(staging)),
        )
        try:
            wait_for_mount(staging, p, under=True)
            time.sleep(delay)
            p.send_signal(sig)  # early ones come before CMD exists
            _, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        stderr = err.decode(errors="replace")
        left = mounts_under(staging)
        # CMD (sleep) was ended by the signal: the status a shell would report
        if (
            p.returncode != 128 + sig
            or "Traceback" in stderr
            or left
            or os.listdir(staging)
        ):
            failures.append(
                f"point {i} ({delay} s): status {p.returncode}, mounts {left}, "
                f"files {os.listdir(staging)}\n{stderr}"
            )
            for m in reversed(left):
                subprocess.run(["umount", "-l", m], check=False)
    assert not failures, "\n".join(failures)
