"""Helpers shared by the tests (imported as ``tests.support``; conftest.py puts the
repository on sys.path): CI rules, mount checks and event-driven waits."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def in_ci() -> bool:
    """Whether CI is set (``.ci/run`` sets CI=1; most CI services set CI=true)."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def cannot_run(reason: str) -> None:
    """Skip with ``reason``; under CI fail instead, because CI must run every test."""
    if in_ci():
        pytest.fail(f"cannot run here, and CI must run it: {reason}", pytrace=False)
    pytest.skip(reason)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_at(path: str | Path, mountinfo: str | None = None) -> list[str]:
    """The filesystem types mounted at ``path``, bottom first (empty: not a mount
    point), from /proc/self/mountinfo or the given text."""
    target = os.path.realpath(path)
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    out = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if _unescape(fields[4]) == target:
            out.append(fields[fields.index("-") + 1])
    return out


def is_mounted(path: str | Path) -> bool:
    return bool(mounts_at(path))


def mounts_under(prefix: str | Path, mountinfo: str | None = None) -> list[str]:
    """Mount points at or below ``prefix``: what a test that owns ``prefix`` left."""
    top = os.path.realpath(prefix)
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    points = [_unescape(line.split()[4]) for line in mountinfo.splitlines()]
    return [p for p in points if p == top or p.startswith(top + "/")]


def wait_for(
    cond: Callable[[], object], timeout: float = 60.0, what: str = "condition"
) -> None:
    """Poll ``cond`` until true; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def wait_for_mount(
    path: str | Path,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 60,
    *,
    under: bool = False,
    count: int = 1,
) -> None:
    """Return as soon as ``path`` is a mount point (``count``: with that many mounts
    stacked there; ``under``: as soon as anything at or below it is mounted): woken by
    the kernel's mount-table change events on /proc/self/mountinfo (POLLPRI), not by
    sleeping. Raises if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    with open("/proc/self/mountinfo") as f:
        poller = select.poll()
        poller.register(f, select.POLLPRI | select.POLLERR)
        while True:
            f.seek(0)
            info = f.read()
            found = mounts_under(path, info) if under else mounts_at(path, info)
            if len(found) >= count:
                return
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode} before mounting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no mount at {path}")
            poller.poll(100)  # a mount table change wakes this at once


def installed_vfiofs() -> str:
    """The ``vfiofs`` console script installed next to this Python (the .venv's), which,
    unlike ``python -m vfiofs``, does not have the current directory on sys.path."""
    script = Path(sys.executable).parent / "vfiofs"
    if not os.access(script, os.X_OK):
        cannot_run(f"no vfiofs script next to {sys.executable} (make venv installs it)")
    return str(script)


def doc_files(into: Path) -> list[str]:
    """Write the ```lang file=PATH blocks of docs/topology.md under ``into``; their
    paths."""
    doc = (ROOT / "docs/topology.md").read_text()
    names = []
    for name, body in re.findall(
        r"^```\w+ file=(\S+)\n(.*?)^```$", doc, re.MULTILINE | re.DOTALL
    ):
        path = into / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        names.append(name)
    return names


def assert_qemu_realized(stdout: str) -> None:
    """What tests/mount/qemu_client.py printed: QEMU realized 0000:00:04.0 with its two
    BARs, mapped guest RAM through the IOMMU, and left no mapping when it quit."""
    out = json.loads(stdout.strip().splitlines()[-1])
    devices = out["pci"]["return"][0]["devices"]
    ours = [
        d
        for d in devices
        if d["id"]["vendor"] == 0x1B36 and d["id"]["device"] == 0x0005
    ]
    assert len(ours) == 1, devices
    assert {(r["bar"], r["size"]) for r in ours[0]["regions"]} == {
        (0, 4096),
        (2, 1 << 20),
    }
    assert out["during"], "QEMU mapped guest RAM through the IOMMU"
    assert out["after"] == [] and out["rc"] == 0
