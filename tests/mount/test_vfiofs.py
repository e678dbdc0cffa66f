"""`vfiofs mount`, `vfiofs umount` and `vfiofs run` on real mounts, with the built-in
topology, a C client of our own and QEMU as a client nobody here wrote."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import assert_qemu_realized, cannot_run, mounts_under
from tests.uapi import build_example

pytestmark = pytest.mark.mount

ROOT = Path(__file__).resolve().parents[2]
VFIOFS = [sys.executable, "-m", "vfiofs"]
QEMU_CLIENT = Path(__file__).with_name("qemu_client.py")
VFIO_GROUP_GET_STATUS = 0x3B67
VFIO_GROUP_GET_DEVICE_FD = 0x3B6A
VFIO_GET_API_VERSION = 0x3B64


def vfiofs_run(
    *cmd: str,
    timeout: float = 120,
    config: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    args = [*VFIOFS, "run", *(["--config", config] if config else []), "--", *cmd]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env
    )


def host_view(bdfs: list[str]) -> dict[str, object]:
    """What `vfiofs run` must leave as it was on the host: our /dev paths, and the
    host's own entries (if any) at the addresses of our devices."""
    view: dict[str, object] = {
        p: os.path.exists(p) for p in ("/dev/vfio", "/dev/iommu")
    }
    for bdf in bdfs:
        vendor = Path("/sys/bus/pci/devices") / bdf / "vendor"
        view[bdf] = vendor.read_text() if vendor.exists() else None
    return view


DEFAULT_BDFS = ["0000:00:04.0", "0000:00:05.0", "0000:00:05.1", "0000:00:06.0"]


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    return build_example("legacy_type1", tmp_path)


@pytest.fixture
def mounted_default(start_daemon):  # type: ignore[no-untyped-def]
    return start_daemon(["-m", "vfiofs", "mount", "{mnt}"])


def test_mount_tree_modes_and_sysfs_formats(mounted_default) -> None:  # type: ignore[no-untyped-def]
    mnt = mounted_default.mountpoint
    assert sorted(os.listdir(mnt / "dev/vfio")) == [
        "0",
        "1",
        "devices",
        "noiommu-2",
        "vfio",
    ]
    assert stat.S_IMODE(os.stat(mnt / "dev/iommu").st_mode) == 0o660
    assert stat.S_IMODE(os.stat(mnt / "dev/vfio/vfio").st_mode) == 0o666
    assert stat.S_IMODE(os.stat(mnt / "dev/vfio/0").st_mode) == 0o600
    dev = mnt / "sys/bus/pci/devices/0000:00:04.0"
    assert (dev / "vendor").read_text() == "0x1b36\n"
    assert (dev / "device").read_text() == "0x0005\n"
    assert (dev / "class").read_text() == "0x00ff00\n"
    assert (dev / "subsystem_vendor").read_text() == "0x1af4\n"
    assert os.path.basename(os.readlink(dev / "iommu_group")) == "0"
    assert os.path.basename(os.readlink(dev / "driver")) == "vfio-pci"
    config = (dev / "config").read_bytes()
    assert len(config) == 4096 and config[:4] == bytes.fromhex("361b0500")
    lines = (dev / "resource").read_text().splitlines()
    assert (
        len(lines) == 13
        and lines[0].endswith("0x0000000000040200")
        and lines[2].endswith("0x000000000014220c")
    )
    assert sorted(os.listdir(mnt / "sys/kernel/iommu_groups/1/devices")) == [
        "0000:00:05.0",
        "0000:00:05.1",
    ]
    assert (mnt / "sys/kernel/iommu_groups/2/name").read_text() == "vfio-noiommu\n"
    assert (
        mnt / "sys/kernel/iommu_groups/0/reserved_regions"
    ).read_text() == "0x00000000fee00000 0x00000000feefffff msi\n"
    # the group link resolves inside the tree
    assert (dev / "iommu_group/devices/0000:00:04.0/vendor").read_text() == "0x1b36\n"
    assert (
        mnt / "sys/module/vfio_iommu_type1/parameters/dma_entry_limit"
    ).read_text() == "65535\n"


def test_mount_group_open_is_exclusive_and_get_device_fd_needs_run(
    mounted_default,
) -> None:  # type: ignore[no-untyped-def]
    mnt = mounted_default.mountpoint
    g = os.open(mnt / "dev/vfio/0", os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            os.open(mnt / "dev/vfio/0", os.O_RDWR)
        assert e.value.errno == errno.EBUSY
        status = bytearray((8).to_bytes(4, "little") + bytes(4))
        assert fcntl.ioctl(g, VFIO_GROUP_GET_STATUS, status, True) == 0
        assert int.from_bytes(status[4:], "little") == 1  # viable, no container
        with pytest.raises(OSError) as e:  # no container yet: the kernel's EINVAL first
            fcntl.ioctl(g, VFIO_GROUP_GET_DEVICE_FD, bytearray(b"0000:00:04.0\0"), True)
        assert e.value.errno == errno.EINVAL
    finally:
        os.close(g)


def test_get_device_fd_in_plain_mount_is_refused_with_a_log(
    mounted_default, legacy
) -> None:  # type: ignore[no-untyped-def]
    # run the legacy flow against the plain mount's paths: it gets as far as GET_DEVICE_FD
    env = dict(os.environ, VFIO_ROOT=str(mounted_default.mountpoint))
    out = subprocess.run(
        [legacy, "0", "0000:00:04.0"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert out.returncode == 1
    assert (
        "FAIL GROUP_GET_DEVICE_FD(0000:00:04.0) = -1 (errno EOPNOTSUPP)" in out.stdout
    )
    assert "ok   MAP_DMA 1 MiB at IOVA 0" in out.stdout
    assert "needs `vfiofs run`" in mounted_default.output()


def test_run_legacy_type1_flow(legacy) -> None:  # type: ignore[no-untyped-def]
    r = vfiofs_run(str(legacy), "0", "0000:00:04.0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAIL" not in r.stdout
    assert "ok   GROUP_GET_DEVICE_FD(0000:00:04.0)" in r.stdout
    assert "ok   config space: vendor 1b36 device 0005" in r.stdout
    assert r.stdout.strip().endswith("done, 0 failures")


def test_run_two_devices_in_one_group_and_noiommu_rules(legacy) -> None:  # type: ignore[no-untyped-def]
    r = vfiofs_run(str(legacy), "1", "0000:00:05.1")
    assert r.returncode == 0, r.stdout + r.stderr
    # a noiommu group cannot use type1: SET_IOMMU finds no backend (ENODEV)
    r = vfiofs_run(str(legacy), "noiommu-2", "0000:00:06.0")
    assert "FAIL SET_IOMMU(TYPE1v2) (errno ENODEV)" in r.stdout


def test_run_exit_status_and_host_untouched(tmp_path: Path) -> None:
    staging = tmp_path / "staging"  # vfiofs run stages its mount under TMPDIR
    staging.mkdir()
    env = dict(os.environ, TMPDIR=str(staging))
    before = host_view(DEFAULT_BDFS)
    script = "test -e /dev/vfio/vfio && test -e /dev/iommu && grep -q 0x1b36 /sys/bus/pci/devices/0000:00:04.0/vendor && exit 7"
    r = vfiofs_run("sh", "-c", script, env=env)
    assert r.returncode == 7, r.stderr
    # its own mount is gone, its staging directory too, and the host looks the same
    assert mounts_under(staging) == [] and os.listdir(staging) == []
    assert host_view(DEFAULT_BDFS) == before


@pytest.mark.slow
def test_run_status_of_a_killed_or_missing_cmd(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    env = dict(os.environ, TMPDIR=str(staging))
    r = vfiofs_run("sh", "-c", "kill -TERM $$", env=env)
    assert r.returncode == 128 + signal.SIGTERM
    # a command that cannot be run: named, with a shell's status
    r = vfiofs_run("/nonexistent/command", env=env)
    assert r.returncode == 127
    assert "vfiofs run: /nonexistent/command: No such file or directory" in r.stderr
    noexec = tmp_path / "noexec"
    noexec.write_text("#!/bin/sh\n")
    r = vfiofs_run(str(noexec), env=env)
    assert r.returncode == 126
    assert f"vfiofs run: {noexec}: Permission denied" in r.stderr
    assert "Traceback" not in r.stderr
    assert mounts_under(staging) == [] and os.listdir(staging) == []


def test_run_qemu_realizes_vfio_pci_device(tmp_path: Path) -> None:
    if shutil.which("qemu-system-x86_64") is None:
        cannot_run("no qemu-system-x86_64 (Debian package qemu-system-x86)")
    r = vfiofs_run(sys.executable, str(QEMU_CLIENT), timeout=180)
    assert r.returncode == 0, r.stderr
    assert_qemu_realized(r.stdout)


def test_bad_config_mounts_nothing(tmp_path: Path, mounted) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[[group]]\n[[group.device]]\nbdf = "0000:00:04.0"\nvendor = 1\ndevice = 2\n[[group.device.bar]]\nindex = 0\nsize = 100\n'
    )
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = subprocess.run(
        [*VFIOFS, "mount", str(mnt), "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert r.returncode == 2
    assert (
        f"{cfg}: group[0].device[0].bar[0].size: 100: must be a power of two"
        in r.stderr
    )
    assert not mounted(mnt)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_daemon_killed_then_umount_leaves_nothing(start_daemon, mounted, sig) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon(["-m", "vfiofs", "mount", "{mnt}"])
    fd = os.open(d.mountpoint / "dev/vfio/vfio", os.O_RDWR)
    assert fcntl.ioctl(fd, VFIO_GET_API_VERSION) == 0
    d.proc.send_signal(sig)
    d.proc.wait(timeout=10)
    with pytest.raises(OSError):  # the caller gets an error, not a hang
        fcntl.ioctl(fd, VFIO_GET_API_VERSION)
    os.close(fd)
    subprocess.run(
        [*VFIOFS, "umount", str(d.mountpoint)], cwd=ROOT, timeout=30, check=False
    )
    assert not mounted(d.mountpoint)


def test_run_dma_memcpy_through_the_iommu_with_msix(tmp_path: Path) -> None:
    exe = build_example("dma_memcpy", tmp_path)
    cases = (
        ("0", "0000:00:04.0"),
        ("1", "0000:00:05.1"),
        ("cdev", "vfio0"),
        ("cdev", "vfio2"),
    )
    # one vfiofs run, the four programs one after the other (each prints its lines)
    script = " && ".join(f"echo == {g} {b} && {exe} {g} {b}" for g, b in cases)
    r = vfiofs_run("sh", "-c", script)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = r.stdout.split("== ")[1:]
    assert [run.split("\n", 1)[0] for run in runs] == [f"{g} {b}" for g, b in cases]
    for run in runs:
        assert "FAIL" not in run
        assert "ok   copy done: one interrupt on the eventfd" in run
        assert "ok   no interrupt on a fault" in run


@pytest.fixture
def cdev_example(tmp_path: Path) -> Path:
    return build_example("cdev_iommufd", tmp_path)


def test_cdev_iommufd_flow_on_a_plain_mount(mounted_default, cdev_example) -> None:  # type: ignore[no-untyped-def]
    env = dict(os.environ, VFIO_ROOT=str(mounted_default.mountpoint))
    r = subprocess.run(
        [cdev_example, "0000:00:04.0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # object ids as the kernel hands them out: DEVICE 1, IOAS 2, auto HWPT 3
    assert "ok   BIND_IOMMUFD: devid 1" in r.stdout
    assert "ok   IOAS_ALLOC: ioas 2" in r.stdout
    assert "ok   ATTACH_IOMMUFD_PT: hwpt 3" in r.stdout
    assert "range 0xfef00000-0xffffffffffff" in r.stdout


def test_cdev_iommufd_flow_under_run(cdev_example) -> None:  # type: ignore[no-untyped-def]
    r = vfiofs_run(str(cdev_example), "0000:00:05.0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("done")


def test_cdev_and_group_exclude_each_other(mounted_default) -> None:  # type: ignore[no-untyped-def]
    mnt = mounted_default.mountpoint
    dev = os.open(mnt / "dev/vfio/devices/vfio0", os.O_RDWR)
    ictx = os.open(mnt / "dev/iommu", os.O_RDWR)
    group = os.open(mnt / "dev/vfio/0", os.O_RDWR)
    bind = bytearray(struct.pack("<IIiIQ", 24, 0, ictx, 0, 0))
    with pytest.raises(OSError) as e:  # group open: the cdev cannot bind
        fcntl.ioctl(dev, 0x3B76, bind, True)
    assert e.value.errno == errno.EBUSY
    os.close(group)
    assert fcntl.ioctl(dev, 0x3B76, bind, True) == 0
    with pytest.raises(OSError) as e:  # cdev bound: the group cannot open
        os.open(mnt / "dev/vfio/0", os.O_RDWR)
    assert e.value.errno == errno.EBUSY
    os.close(dev)
    os.close(os.open(mnt / "dev/vfio/0", os.O_RDWR))  # free again after the cdev closed
    os.close(ictx)


def test_noiommu_device_has_no_cdev(mounted_default) -> None:  # type: ignore[no-untyped-def]
    mnt = mounted_default.mountpoint
    assert sorted(os.listdir(mnt / "dev/vfio/devices")) == ["vfio0", "vfio1", "vfio2"]
    assert not (mnt / "sys/bus/pci/devices/0000:00:06.0/vfio-dev").exists()
    assert (
        mnt / "sys/bus/pci/devices/0000:00:04.0/vfio-dev/vfio0/dev"
    ).read_text() == "511:0\n"
    assert os.readlink(mnt / "sys/class/vfio-dev/vfio0").endswith(
        "0000:00:04.0/vfio-dev/vfio0"
    )


def test_iommufd_compat_container_runs_the_legacy_programs(
    legacy, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "compat.toml"
    cfg.write_text(
        (ROOT / "vfiofs/default_topology.toml")
        .read_text()
        .replace("container = true", "container = false")
    )
    r = vfiofs_run(str(legacy), "0", "0000:00:04.0", config=str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    dma = build_example("dma_memcpy", tmp_path)
    r = vfiofs_run(str(dma), "0", "0000:00:04.0", config=str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr


def test_dma_memcpy_cdev_path_on_a_plain_mount(mounted_default, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    exe = build_example("dma_memcpy", tmp_path)
    env = dict(os.environ, VFIO_ROOT=str(mounted_default.mountpoint))
    r = subprocess.run(
        [exe, "cdev", "vfio0"], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == 0, r.stdout
    assert "ok   copy done: one interrupt on the eventfd" in r.stdout


def test_run_in_a_user_namespace(legacy, cdev_example, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The recipe `vfiofs run` uses without root (VFIOFS_USERNS=1 takes it as root too):
    a user namespace, /dev rebuilt from bind mounts, the tree's sysfs bound over the host's."""
    staging = tmp_path / "staging"
    staging.mkdir()
    before = host_view(DEFAULT_BDFS)
    env = dict(os.environ, VFIOFS_USERNS="1", TMPDIR=str(staging))
    script = f"cat /proc/self/uid_map && {legacy} 0 0000:00:04.0 && {cdev_example} 0000:00:05.0 && echo x > /dev/null"
    r = subprocess.run(
        [*VFIOFS, "run", "--", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAIL" not in r.stdout
    assert r.stdout.split()[:3] == [
        "0",
        str(os.getuid()),
        "1",
    ]  # inside a user namespace
    assert "done, 0 failures" in r.stdout
    assert r.stdout.strip().endswith("done")
    assert mounts_under(staging) == [] and os.listdir(staging) == []
    assert host_view(DEFAULT_BDFS) == before
