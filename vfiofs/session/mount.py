"""Mounting and unmounting a FUSE filesystem without libfuse.

As root we call mount(2) with the /dev/fuse fd in the options, as fuser's ``fuse_pure``
and go-fuse's ``mountDirect`` do. Without root, ``fusermount3`` (setuid) mounts for us and
passes the fd back over the socket named by ``_FUSE_COMMFD``.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import socket
import subprocess

import attrs

log = logging.getLogger("vfiofs.mount")

MS_NOSUID = 0x2
MS_NODEV = 0x4
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p,) * 3 + (ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


@attrs.frozen
class MountOptions:
    """How the filesystem is mounted."""

    fsname: str = "vfiofs"
    allow_other: bool = True
    default_permissions: bool = True
    max_read: int = 0


def _options(opts: MountOptions, fd: int | None) -> str:
    parts = []
    if fd is not None:
        parts += [
            f"fd={fd}",
            "rootmode=40000",
            f"user_id={os.getuid()}",
            f"group_id={os.getgid()}",
        ]
    if opts.allow_other:
        parts.append("allow_other")
    if opts.default_permissions:
        parts.append("default_permissions")
    if opts.max_read:
        parts.append(f"max_read={opts.max_read}")
    return ",".join(parts)


def open_fuse_device() -> int:
    """A non-blocking, close-on-exec fd on /dev/fuse."""
    return os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)


def mount(mountpoint: str, opts: MountOptions = MountOptions()) -> int:
    """Mount at ``mountpoint``; returns the /dev/fuse fd to serve.

    Raises:
        OSError: the mount failed (the message names the mountpoint).
    """
    if os.geteuid() != 0:
        return _fusermount(mountpoint, opts)
    fd = open_fuse_device()
    data = _options(opts, fd).encode()
    rc = _libc.mount(
        opts.fsname.encode(),
        mountpoint.encode(),
        f"fuse.{opts.fsname}".encode(),
        MS_NOSUID | MS_NODEV,
        data,
    )
    if rc != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"mount {mountpoint}: {os.strerror(err)}")
    return fd


def _fusermount(mountpoint: str, opts: MountOptions) -> int:
    exe = shutil.which("fusermount3")
    if exe is None:
        raise OSError(errno.EPERM, "not root and no fusermount3 (Debian package fuse3)")
    if opts.allow_other and not _user_allow_other():
        # fusermount3 refuses allow_other to users unless /etc/fuse.conf allows it; our own
        # processes (the same uid, also inside `vfiofs run`'s user namespace) do not need it
        log.info("mounting without allow_other (no user_allow_other in /etc/fuse.conf)")
        opts = attrs.evolve(opts, allow_other=False)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
        cmd = [
            exe,
            "-o",
            _options(opts, None) + f",fsname={opts.fsname}",
            "--",
            mountpoint,
        ]
        proc = subprocess.run(
            cmd, env=env, pass_fds=[theirs.fileno()], capture_output=True, check=False
        )
        if proc.returncode != 0:
            why = proc.stderr.decode(errors="replace").strip()
            why = why.removeprefix(f"{exe}: ")  # it names itself by its argv[0]
            raise OSError(errno.EPERM, f"fusermount3: {why}")
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
    if not fds:
        raise OSError(errno.EIO, "fusermount3 sent no fd")
    os.set_blocking(fds[0], False)
    return fds[0]


def _user_allow_other() -> bool:
    try:
        with open("/etc/fuse.conf") as f:
            return any(line.split("#")[0].strip() == "user_allow_other" for line in f)
    except OSError:
        return False


def unmount(mountpoint: str) -> None:
    """Detach the mount (lazily: open files keep working until closed)."""
    if os.geteuid() == 0:
        if _libc.umount2(mountpoint.encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):  # not mounted: nothing to do
                raise OSError(err, f"umount {mountpoint}: {os.strerror(err)}")
        return
    exe = shutil.which("fusermount3") or "fusermount3"
    subprocess.run(
        [exe, "-u", "-z", "--", mountpoint], check=False, capture_output=True
    )


def is_mounted(mountpoint: str) -> bool:
    """Whether ``mountpoint`` is a mount point (per /proc/self/mountinfo)."""
    return mounted_fstype(mountpoint) is not None


def mounted_fstype(mountpoint: str) -> str | None:
    """The filesystem type (``fuse.vfiofs``, ``tmpfs``...) of the topmost mount at
    ``mountpoint``, or None; from /proc/self/mountinfo, without entering the mount."""
    target = os.path.realpath(mountpoint)
    fstype = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == target:  # later lines are mounted on top of earlier ones
                fstype = fields[fields.index("-") + 1]
    return fstype
