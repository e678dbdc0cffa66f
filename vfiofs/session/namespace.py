"""A private mount namespace where the tree sits at the paths tools hard-code.

Recipe (docs/internals.md, platform facts): unshare(CLONE_NEWNS) in a single-threaded process, make every
mount private (so nothing propagates back to the host), then:
- /dev: an overlay (lower = the host's /dev, upper = a private tmpfs) so /dev/vfio can be
  created without touching the host's devtmpfs; /dev's submounts are re-attached; the
  tree's dev/vfio is bound on /dev/vfio and dev/iommu on /dev/iommu;
- /sys: read-only overlays whose top layer is the tree and bottom layer the host's
  directory, so /sys/bus/pci/devices shows our devices *and* the host's, and the rest of
  /sys is untouched.
"""

from __future__ import annotations

import ctypes
import os
from typing import Final

CLONE_NEWNS: Final = 0x20000
CLONE_NEWUSER: Final = 0x10000000
MS_RDONLY: Final = 0x1
MS_NOSUID: Final = 0x2
MS_BIND: Final = 0x1000
MS_REC: Final = 0x4000
MS_PRIVATE: Final = 0x40000

# sysfs directories merged with the tree's (tree on top)
SYSFS_OVERLAYS: Final = (
    "bus/pci/devices",
    "bus/pci/drivers",
    "devices/pci0000:00",
    "devices/virtual",
    "kernel/iommu_groups",
    "kernel/debug",
    "class",
    "module",
)

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare_mount_namespace() -> None:
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")


def mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source} on {target}",
    )


def _submounts(prefix: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if point.startswith(prefix + "/"):
                out.append(point)
    return out


def overlay_dev(tree_dev: str, scratch: str) -> None:
    """/dev becomes an overlay with the tree's vfio directory and iommu node in it."""
    subs = _submounts("/dev")
    keep = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p in subs}
    mount("tmpfs", scratch, "tmpfs", MS_NOSUID, "mode=755,size=1m")
    upper, work = os.path.join(scratch, "upper"), os.path.join(scratch, "work")
    os.mkdir(upper)
    os.mkdir(work)
    mount(
        "overlay",
        "/dev",
        "overlay",
        MS_NOSUID,
        f"lowerdir=/dev,upperdir={_escape(upper)},workdir={_escape(work)}",
    )
    for point, fd in keep.items():
        mount(f"/proc/self/fd/{fd}", point, None, MS_BIND | MS_REC)
        os.close(fd)
    if os.path.isdir(os.path.join(tree_dev, "vfio")):
        os.makedirs("/dev/vfio", exist_ok=True)
        mount(os.path.join(tree_dev, "vfio"), "/dev/vfio", None, MS_BIND)
    if os.path.exists(os.path.join(tree_dev, "iommu")):
        if not os.path.exists("/dev/iommu"):
            os.close(os.open("/dev/iommu", os.O_CREAT | os.O_WRONLY, 0o660))
        mount(os.path.join(tree_dev, "iommu"), "/dev/iommu", None, MS_BIND)


def _escape(path: str) -> str:
    """Overlay options separate layers with ':' and options with ','."""
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def overlay_sys(tree_sys: str) -> None:
    """Merge the tree's sysfs directories over the host's (read-only overlays)."""
    for rel in SYSFS_OVERLAYS:
        ours, host = os.path.join(tree_sys, rel), os.path.join("/sys", rel)
        if not os.path.isdir(ours):
            continue
        if os.path.isdir(host):
            mount(
                "overlay",
                host,
                "overlay",
                MS_RDONLY,
                f"lowerdir={_escape(ours)}:{_escape(host)}",
            )


# Without root (a user namespace) overlayfs refuses /dev (it has locked submounts) and
# sysfs as a lower layer, so that mode rebuilds /dev on a tmpfs from bind mounts and binds
# the tree's sysfs directories over the host's (hiding the host's entries there).
SYSFS_BINDS: Final = (
    "bus/pci/devices",
    "devices/pci0000:00",
    "kernel/iommu_groups",
    "kernel/debug",
)


def enter_user_namespace() -> None:
    """A user namespace where we are root (mapped to our own uid and gid), owning a new
    mount namespace: what makes the mounts below possible without privileges."""
    uid, gid = os.getuid(), os.getgid()
    _check(
        _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER|CLONE_NEWNS)"
    )
    for name, value in (
        ("setgroups", "deny"),
        ("uid_map", f"0 {uid} 1"),
        ("gid_map", f"0 {gid} 1"),
    ):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(value)


def rebuild_dev(tree_dev: str, scratch: str) -> None:
    """/dev as a tmpfs holding bind mounts of the host's entries, plus the tree's."""
    keep: list[tuple[str, int]] = []
    links: list[tuple[str, str]] = []
    for name in sorted(os.listdir("/dev")):
        path = os.path.join("/dev", name)
        if os.path.islink(path):
            links.append((name, os.readlink(path)))
        else:
            keep.append((name, os.open(path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)))
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=755,size=1m")
    for name, fd in keep:
        target = os.path.join("/dev", name)
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.mkdir(target)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
        mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        os.close(fd)
    for name, dest in links:
        os.symlink(dest, os.path.join("/dev", name))
    if os.path.isdir(os.path.join(tree_dev, "vfio")):
        os.mkdir("/dev/vfio")
        mount(os.path.join(tree_dev, "vfio"), "/dev/vfio", None, MS_BIND)
    if os.path.exists(os.path.join(tree_dev, "iommu")):
        if not os.path.exists("/dev/iommu"):
            os.close(os.open("/dev/iommu", os.O_CREAT | os.O_WRONLY, 0o660))
        mount(os.path.join(tree_dev, "iommu"), "/dev/iommu", None, MS_BIND)
    del scratch  # the tmpfs is /dev itself


def bind_sys(tree_sys: str) -> None:
    for rel in SYSFS_BINDS:
        ours, host = os.path.join(tree_sys, rel), os.path.join("/sys", rel)
        if os.path.isdir(ours) and os.path.isdir(host):
            mount(ours, host, None, MS_BIND)


def setup(mountpoint: str, scratch: str, *, user_namespace: bool = False) -> None:
    """Everything above, in a fresh mount namespace of the calling process; inside a new
    user namespace when ``user_namespace`` (`vfiofs run` without root)."""
    if user_namespace:
        enter_user_namespace()
    else:
        unshare_mount_namespace()
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    if user_namespace:
        rebuild_dev(os.path.join(mountpoint, "dev"), scratch)
        bind_sys(os.path.join(mountpoint, "sys"))
        return
    overlay_dev(os.path.join(mountpoint, "dev"), scratch)
    overlay_sys(os.path.join(mountpoint, "sys"))
