"""vfiofs as a real unprivileged user (uid 65534), whatever the host's /dev/fuse allows.

Each test runs the daemon in a private mount namespace of its own in which /dev/fuse is
a device node the test made (on a private tmpfs) with the mode under test, 0600 or 0666
(0666 is what installing fuse3 leaves on Debian). The host's /dev/fuse is never touched,
and every mount the daemon makes dies with that namespace. The daemon runs as uid 65534
under the system's /usr/bin/python3 with vfiofs and its dependencies copied to a public
directory: the virtualenv and the checkout are usually in directories only root can
enter.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.support import ROOT, assert_qemu_realized, cannot_run, mounts_at
from tests.uapi import build_example

pytestmark = pytest.mark.mount

NOBODY = 65534
# pure-Python packages the daemon imports: trio's dependencies and attrs
PACKAGES = ("trio", "attr", "attrs", "outcome", "sniffio", "sortedcontainers", "idna")
# as root in the new namespace: a private tmpfs (not nodev) holding our own /dev/fuse
# node with the mode under test, bound over /dev/fuse; then uid 65534
NAMESPACE = r"""
set -eu
dev=$1; mode=$2; shift 2
mount -t tmpfs -o mode=0755,size=64k vfiofs-test-fuse "$dev"
mknod -m "$mode" "$dev/fuse" c 10 229
mount --bind "$dev/fuse" /dev/fuse
exec setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"
"""


@attrs.define
class Nobody:
    """A public directory with what uid 65534 needs, and a way to run things as that
    user in a namespace with our own /dev/fuse."""

    top: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": str(self.top / "lib"),
            "HOME": str(self.top),
            "TMPDIR": str(self.top / "tmp"),
            "LANG": "C.UTF-8",
        }

    def argv(self, fuse_mode: int, *cmd: str) -> list[str]:
        dev = self.top / f"fuse-{os.urandom(4).hex()}"
        dev.mkdir()
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            NAMESPACE,
            "sh",
            str(dev),
            f"{fuse_mode:o}",
            *cmd,
        ]

    def vfiofs(self, fuse_mode: int, *args: str) -> list[str]:
        return self.argv(fuse_mode, "/usr/bin/python3", "-m", "vfiofs", *args)

    def run(
        self, argv: list[str], timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=self.top,
        )


def _prerequisite() -> str | None:
    for tool in ("unshare", "setpriv", "nsenter", "fusermount3", "mknod"):
        if shutil.which(tool) is None:
            return f"no {tool} (Debian packages util-linux, fuse3, coreutils)"
    if not os.access("/usr/bin/python3", os.X_OK):
        return "no /usr/bin/python3 (Debian package python3)"
    try:
        n = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except OSError:
        n = 0
    if n == 0:
        return "the kernel refuses user namespaces (user.max_user_namespaces = 0)"
    return None


@pytest.fixture(scope="module")
def nobody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nobody]:
    reason = _prerequisite()
    if reason is not None:
        cannot_run(reason)
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="vfiofs-nobody-", dir="/tmp"))
    try:
        top.chmod(0o755)
        lib = top / "lib"
        ignore = shutil.ignore_patterns("__pycache__")
        for name in PACKAGES:
            origin = importlib.import_module(name).__file__
            assert origin is not None
            shutil.copytree(Path(origin).parent, lib / name, ignore=ignore)
        shutil.copytree(ROOT / "vfiofs", lib / "vfiofs", ignore=ignore)
        (top / "tmp").mkdir(mode=0o1777)
        (top / "tmp").chmod(0o1777)
        bin_ = top / "bin"
        bin_.mkdir()
        for name in ("legacy_type1", "cdev_iommufd", "dma_memcpy"):
            build_example(name, bin_).chmod(0o755)
        shutil.copy(ROOT / "tests/mount/qemu_client.py", top / "qemu_client.py")
        for p in [top, *top.rglob("*")]:  # readable by everyone, whatever the umask
            p.chmod(p.stat().st_mode | (0o555 if p.is_dir() else 0o444))
        (top / "tmp").chmod(0o1777)
        env = Nobody(top)
        r = env.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                "import sys, trio, vfiofs.cli; assert sys.version_info >= (3, 11)",
            ]
        )
        assert r.returncode == 0, f"the system python cannot run vfiofs:\n{r.stderr}"
        yield env
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _in_namespace(pid: int, nsfd: int, *cmd: str, as_nobody: bool) -> str:
    """Run ``cmd`` in the mount namespace held open as ``nsfd``; its stdout."""
    who = (
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        if as_nobody
        else []
    )
    r = subprocess.run(
        ["nsenter", f"--mount=/proc/{os.getpid()}/fd/{nsfd}", *who, *cmd],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


CHECK_AS_USER = r"""
import errno, fcntl, json, os, struct, sys
mnt = sys.argv[1]
out = {}
for rel in ("dev/vfio/0", "dev/vfio/devices/vfio0", "dev/iommu", "dev/vfio/vfio"):
    st = os.stat(os.path.join(mnt, rel))
    out[rel] = [st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)]
g = os.open(os.path.join(mnt, "dev/vfio/0"), os.O_RDWR)
status = bytearray(struct.pack("<II", 8, 0))
fcntl.ioctl(g, 0x3B67, status, True)  # VFIO_GROUP_GET_STATUS
out["status"] = struct.unpack("<II", status)[1]
os.close(g)
for rel in ("dev/vfio/devices/vfio0", "dev/iommu"):
    os.close(os.open(os.path.join(mnt, rel), os.O_RDWR))
print(json.dumps(out))
"""

CHECK_AS_ROOT = r"""
import os, sys
try:
    os.listdir(os.path.join(sys.argv[1], "dev/vfio"))
    print("ok")
except PermissionError:
    print("EACCES")
"""


@pytest.mark.parametrize("fuse_mode", [0o600, 0o666], ids=["0600", "0666"])
def test_unprivileged_mount(nobody: Nobody, fuse_mode: int) -> None:
    """`vfiofs mount` as uid 65534 goes through fusermount3. With /dev/fuse 0600 it
    fails in one line naming the cause; with 0666 it mounts, the user opens its group,
    cdev and iommufd (they are the user's), root is refused (no allow_other unless
    /etc/fuse.conf has user_allow_other), and SIGTERM unmounts."""
    mnt = nobody.top / f"m{fuse_mode:o}"
    mnt.mkdir()
    os.chown(mnt, NOBODY, NOBODY)
    if fuse_mode == 0o600:
        doctor = nobody.run(nobody.vfiofs(fuse_mode, "doctor"))
        assert doctor.returncode == 1
        assert any(
            line.startswith("MISSING")
            and "FUSE" in line
            and "Permission denied" in line
            for line in doctor.stdout.splitlines()
        ), doctor.stdout
        r = nobody.run(nobody.vfiofs(fuse_mode, "mount", str(mnt)))
        assert r.returncode == 1, r.stderr
        assert r.stderr.strip().splitlines() == [
            "vfiofs: fusermount3: failed to open /dev/fuse: Permission denied"
        ], r.stderr
        return
    p = subprocess.Popen(
        nobody.vfiofs(fuse_mode, "mount", str(mnt)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=nobody.env,
        cwd=nobody.top,
    )
    assert p.stdout is not None and p.stderr is not None
    nsfd = -1
    try:
        ready = p.stdout.readline()  # printed once INIT is answered
        assert ready.startswith(f"vfiofs: ready at {mnt}: devices "), (
            ready + p.stderr.read()
        )
        nsfd = os.open(f"/proc/{p.pid}/ns/mnt", os.O_RDONLY)
        mountinfo = _in_namespace(
            p.pid, nsfd, "cat", "/proc/self/mountinfo", as_nobody=False
        )
        line = next(ln for ln in mountinfo.splitlines() if ln.split()[4] == str(mnt))
        allow_other = "allow_other" in line.split(" - ")[1]
        seen = json.loads(
            _in_namespace(
                p.pid,
                nsfd,
                "/usr/bin/python3",
                "-c",
                CHECK_AS_USER,
                str(mnt),
                as_nobody=True,
            )
        )
        # the user's own device files, with the kernel's modes; the container is root's
        assert seen["dev/vfio/0"] == [NOBODY, NOBODY, "0o600"]
        assert seen["dev/vfio/devices/vfio0"] == [NOBODY, NOBODY, "0o600"]
        assert seen["dev/iommu"] == [NOBODY, NOBODY, "0o660"]
        assert seen["dev/vfio/vfio"] == [0, 0, "0o666"]
        assert seen["status"] == 1  # VFIO_GROUP_FLAGS_VIABLE
        root_sees = _in_namespace(
            p.pid, nsfd, sys.executable, "-c", CHECK_AS_ROOT, str(mnt), as_nobody=False
        ).strip()
        assert root_sees == ("ok" if allow_other else "EACCES")
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert "Traceback" not in err
        after = _in_namespace(
            p.pid, nsfd, "cat", "/proc/self/mountinfo", as_nobody=False
        )
        assert mounts_at(mnt, after) == []
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if nsfd >= 0:
            os.close(nsfd)


@pytest.mark.slow
def test_unprivileged_run_legacy_cdev_and_dma(nobody: Nobody) -> None:
    """`vfiofs run` as uid 65534 (a user namespace inside): the legacy flow with
    GET_DEVICE_FD, the cdev + iommufd flow and DMA with an MSI-X interrupt, in C."""
    b = nobody.top / "bin"
    script = (
        "cat /proc/self/uid_map"
        f" && {b}/legacy_type1 0 0000:00:04.0"
        f" && {b}/cdev_iommufd 0000:00:05.0"
        f" && {b}/dma_memcpy 0 0000:00:04.0"
        f" && {b}/dma_memcpy cdev vfio2"
    )
    r = nobody.run(nobody.vfiofs(0o666, "run", "--", "sh", "-c", script))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split()[:3] == ["0", str(NOBODY), "1"]  # root in its namespace only
    assert "FAIL" not in r.stdout
    assert "ok   GROUP_GET_DEVICE_FD(0000:00:04.0)" in r.stdout
    assert "done, 0 failures" in r.stdout
    assert "ok   ATTACH_IOMMUFD_PT" in r.stdout
    assert r.stdout.count("ok   copy done: one interrupt on the eventfd") == 2
    assert "Traceback" not in r.stderr
    assert os.listdir(nobody.top / "tmp") == []  # its staging directory is gone


@pytest.mark.slow
def test_unprivileged_run_noiommu_needs_cap_sys_rawio(nobody: Nobody) -> None:
    """Root in a user namespace is not root to the kernel's capable(): a noiommu group
    refuses it (EPERM), as vfio_group_fops_open() refuses a task without
    CAP_SYS_RAWIO."""
    code = (
        "import os\n"
        "try: os.open('/dev/vfio/noiommu-2', os.O_RDWR); print('opened')\n"
        "except OSError as e: print(e.errno)\n"
    )
    r = nobody.run(nobody.vfiofs(0o666, "run", "--", "/usr/bin/python3", "-c", code))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(1)]  # EPERM


@pytest.mark.slow
def test_unprivileged_run_qemu_realizes_a_device(nobody: Nobody) -> None:
    """QEMU 7.2 realizes 0000:00:04.0 for uid 65534. Its guest RAM is 6 MiB: without
    CAP_IPC_LOCK, what VFIO pins counts against RLIMIT_MEMLOCK (8 MiB by default), as
    in the kernel; a bigger guest needs `ulimit -l` raised by an administrator."""
    if shutil.which("qemu-system-x86_64") is None:
        cannot_run("no qemu-system-x86_64 (Debian package qemu-system-x86)")
    r = nobody.run(
        nobody.vfiofs(
            0o666,
            "run",
            "--",
            "/usr/bin/python3",
            str(nobody.top / "qemu_client.py"),
            "0000:00:04.0",
            "0",
            "6",
        ),
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert_qemu_realized(r.stdout)
    assert os.listdir(nobody.top / "tmp") == []
