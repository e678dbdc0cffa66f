"""`vfiofs mount` and `vfiofs run` as a newcomer meets them: where it will not mount and
why, the line saying it is ready, and the worked example of docs/topology.md run as the
page shows it (a user's own Python device, seen by lspci)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import (
    ROOT,
    cannot_run,
    doc_files,
    installed_vfiofs,
    is_mounted,
    mounts_at,
)

pytestmark = pytest.mark.mount

VFIOFS = [sys.executable, "-m", "vfiofs"]
READY = (
    "vfiofs: ready at {mnt}: devices 0000:00:04.0 0000:00:05.0 0000:00:05.1 "
    "0000:00:06.0; groups 0 1 noiommu-2"
)


def mount(*args: str) -> subprocess.CompletedProcess[str]:
    """`vfiofs mount` expected to refuse (so it returns)."""
    return subprocess.run(
        [*VFIOFS, "mount", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_mount_refuses_what_is_not_a_place_to_mount(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    r = mount(str(missing))
    assert (r.returncode, r.stderr) == (
        2,
        f"vfiofs: {missing}: does not exist (mkdir -p {missing})\n",
    )
    afile = tmp_path / "file"
    afile.write_text("")
    r = mount(str(afile))
    assert (r.returncode, r.stderr) == (2, f"vfiofs: {afile}: not a directory\n")
    full = tmp_path / "full"
    full.mkdir()
    (full / "something").write_text("")
    r = mount(str(full))
    assert (r.returncode, r.stderr) == (
        2,
        f"vfiofs: {full}: not empty (--force mounts over its contents)\n",
    )
    assert not is_mounted(full) and not is_mounted(afile)


def test_mount_says_when_ready_and_force_mounts_over(
    start_daemon, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    full = tmp_path / "full"
    full.mkdir()
    (full / "something").write_text("")
    d = start_daemon(["-m", "vfiofs", "mount", "--force", "{mnt}"], mountpoint=full)
    assert os.listdir(full / "dev/vfio")  # our tree hides the directory's contents
    assert d.output().splitlines()[0] == READY.format(mnt=full)
    # a second vfiofs on the same place: refused, unless forced; the first one serves on
    r = mount(str(full))
    assert r.returncode == 2
    assert r.stderr == (
        f"vfiofs: {full}: vfiofs is already mounted there (`vfiofs umount {full}` "
        "removes it; --force mounts over it)\n"
    )
    top = start_daemon(
        ["-m", "vfiofs", "mount", "--force", "--quiet", "{mnt}"],
        mountpoint=full,
        wait=False,
    )
    top.wait_mounted()
    assert mounts_at(full) == ["fuse.vfiofs", "fuse.vfiofs"]
    assert top.output() == ""  # --quiet: no ready line
    assert top.stop() is None  # exit status 0, its own mount gone
    assert mounts_at(full) == ["fuse.vfiofs"]  # the first one is still there
    assert (full / "sys/bus/pci/devices/0000:00:04.0/vendor").read_text() == "0x1b36\n"
    assert d.proc.poll() is None


def test_run_installed_script_with_model_path(tmp_path: Path) -> None:
    """The console script loads a model from the user's directory with --model-path."""
    cfg = tmp_path / "stamp.toml"
    cfg.write_text(
        '[[group]]\n[[group.device]]\nbdf = "0000:00:07.0"\n'
        'model = "examples.python_device:StampDevice"\nvendor = 0x1234\n'
        "device = 0x5678\n[[group.device.bar]]\nindex = 0\nsize = 4096\n"
    )
    r = subprocess.run(
        [
            installed_vfiofs(),
            "run",
            "--config",
            str(cfg),
            "--model-path",
            str(ROOT),
            "--",
            "cat",
            "/sys/bus/pci/devices/0000:00:07.0/vendor",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert (r.returncode, r.stdout) == (0, "0x1234\n"), r.stderr


def test_topology_doc_worked_example(tmp_path: Path) -> None:
    """docs/topology.md's example, run as the page shows it: its files in an empty
    directory, its command with the installed `vfiofs` on PATH, its output."""
    if shutil.which("lspci") is None:
        cannot_run("no lspci (Debian package pciutils)")
    doc_files(tmp_path)
    doc = (ROOT / "docs/topology.md").read_text()
    console = doc.split("```console\n", 1)[1].split("```", 1)[0].splitlines()
    command = console[0].removeprefix("$ ")
    expected = console[1:]
    path = f"{Path(installed_vfiofs()).parent}:{os.environ['PATH']}"
    r = subprocess.run(
        shlex.split(command),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=dict(os.environ, PATH=path),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[: len(expected)] == expected
