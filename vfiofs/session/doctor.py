"""``vfiofs doctor``: which kernel features vfiofs relies on are present here."""

from __future__ import annotations

import ctypes
import os
import shutil
from collections.abc import Callable
from typing import TextIO

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _fuse() -> tuple[bool, str]:
    if not os.path.exists("/dev/fuse"):
        return False, "no /dev/fuse (modprobe fuse)"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        return False, f"/dev/fuse: {e.strerror}"
    return True, "/dev/fuse opens"


def _fusermount() -> tuple[bool, str]:
    exe = shutil.which("fusermount3")
    if exe is None:
        return os.geteuid() == 0, "no fusermount3 (Debian: fuse3); root mounts directly"
    return True, exe


def _pidfd_getfd() -> tuple[bool, str]:
    try:
        pidfd = os.pidfd_open(os.getpid())
    except OSError as e:
        return False, f"pidfd_open: {e.strerror}"
    try:
        fd = _libc.syscall(438, pidfd, 0, 0)
        if fd < 0:
            return False, f"pidfd_getfd: {os.strerror(ctypes.get_errno())}"
        os.close(fd)
        return True, "pidfd_open + pidfd_getfd work"
    finally:
        os.close(pidfd)


def _seccomp() -> tuple[bool, str]:
    actions = _read("/proc/sys/kernel/seccomp/actions_avail")
    if actions is None:
        return False, "no seccomp filter support"
    ok = "user_notif" in actions.split()
    return (
        ok,
        "user_notif available" if ok else "no user_notif action (vfiofs run needs it)",
    )


def _userns() -> tuple[bool, str]:
    if os.geteuid() == 0:
        return True, "root: mount namespaces without user namespaces"
    n = _read("/proc/sys/user/max_user_namespaces")
    clone = _read("/proc/sys/kernel/unprivileged_userns_clone")
    ok = n not in (None, "0") and clone != "0"
    return ok, f"max_user_namespaces={n} unprivileged_userns_clone={clone}"


def _ptrace() -> tuple[bool, str]:
    scope = _read("/proc/sys/kernel/yama/ptrace_scope")
    if scope is None:
        return (
            True,
            "no Yama: a daemon can read its callers' memory (same user or root)",
        )
    ok = scope in ("0", "1") or os.geteuid() == 0
    return ok, f"yama ptrace_scope={scope} (1: only for vfiofs run's own children)"


def _overlay() -> tuple[bool, str]:
    fs = _read("/proc/filesystems") or ""
    ok = "overlay" in fs
    return (
        ok,
        "overlayfs available" if ok else "no overlayfs (vfiofs run needs it for /dev)",
    )


def _io_uring() -> tuple[bool, str]:
    from .transport import uring_unavailable

    why = uring_unavailable()
    if why is None:
        return True, "the kernel offers FUSE over io_uring (--transport=auto uses it)"
    return False, f"{why}; vfiofs serves over /dev/fuse read/write"


CHECKS: tuple[tuple[str, Callable[[], tuple[bool, str]]], ...] = (
    ("FUSE", _fuse),
    ("fusermount3", _fusermount),
    ("pidfd_getfd", _pidfd_getfd),
    ("seccomp user notification", _seccomp),
    ("namespaces", _userns),
    ("ptrace access", _ptrace),
    ("overlayfs", _overlay),
)


# features vfiofs uses when present and does without otherwise
OPTIONAL: tuple[tuple[str, Callable[[], tuple[bool, str]]], ...] = (
    ("io_uring transport", _io_uring),
)


def doctor(out: TextIO) -> int:
    """Print one line per feature; exit status 1 if a required one is missing."""
    missing = 0
    for name, check in CHECKS:
        ok, detail = check()
        missing += not ok
        print(f"{'ok' if ok else 'MISSING':<8}{name:<28}{detail}", file=out)
    for name, check in OPTIONAL:
        ok, detail = check()
        print(f"{'ok' if ok else 'no':<8}{name:<28}{detail}", file=out)
    return 1 if missing else 0
