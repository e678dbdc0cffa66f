"""The `vfiofs` command as a newcomer meets it, where no mount is needed: --version, the
usage, and topology mistakes as one line naming the file, the key and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import vfiofs
from tests.support import ROOT, installed_vfiofs

VFIOFS = [sys.executable, "-m", "vfiofs"]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VFIOFS, *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def test_version() -> None:
    r = run("--version")
    assert (r.returncode, r.stdout) == (0, f"vfiofs {vfiofs.__version__}\n")


def test_no_arguments_prints_the_usage() -> None:
    r = run()
    assert r.returncode == 2
    assert r.stderr.startswith("usage: vfiofs ")
    for command in ("mount", "umount", "run", "doctor"):
        assert f"    {command} " in r.stderr


def test_bad_topology_is_one_line_and_nothing_runs(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        '[[group]]\n[[group.device]]\nbdf = "0000:00:04.0"\nvendr = 1\ndevice = 2\n'
    )
    (tmp_path / "mnt").mkdir()
    for args in (
        ["mount", "--config", str(cfg), str(tmp_path / "mnt")],
        ["run", "--config", str(cfg), "--", "true"],
    ):
        r = run(*args)
        assert r.returncode == 2
        assert r.stderr == (
            f"vfiofs: {cfg}: group[0].device[0].vendr: unknown key vendr "
            "(did you mean vendor?)\n"
        )


def test_installed_script_says_how_to_find_a_users_model(tmp_path: Path) -> None:
    """The console script does not import from the current directory: a model there
    is an error naming the key and --model-path, not a traceback."""
    cfg = tmp_path / "stamp.toml"
    cfg.write_text(
        '[[group]]\n[[group.device]]\nbdf = "0000:00:07.0"\n'
        'model = "examples.python_device:StampDevice"\nvendor = 1\ndevice = 2\n'
        "[[group.device.bar]]\nindex = 0\nsize = 4096\n"
    )
    r = subprocess.run(
        [installed_vfiofs(), "run", "--config", str(cfg), "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,  # examples/ is right here, and still not importable
    )
    assert r.returncode == 2
    assert r.stderr.startswith(
        f"vfiofs: {cfg}: group[0].device[0].model: model "
        "'examples.python_device:StampDevice': No module named 'examples' "
    )
    assert "--model-path DIR" in r.stderr and r.stderr.count("\n") == 1
