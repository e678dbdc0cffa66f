"""Shared test helpers: real mounts in subprocesses, and C clients compiled with gcc."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
C_DIR = ROOT / "tests" / "c"
if str(ROOT) not in sys.path:  # topologies name example models as examples.module:Class
    sys.path.insert(0, str(ROOT))

from tests.transport import fuse_uring_parameter, uring_unavailable  # noqa: E402


def fuse_unavailable() -> str | None:
    """Why a real mount cannot be made here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if os.geteuid() != 0:
        return "mount tests need root"
    return None


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    reason = fuse_unavailable()
    if reason is None:
        return
    for item in items:
        if "mount" in item.keywords:
            # In CI a skipped mount test would hide a failure: fail instead.
            marker = (
                pytest.mark.xfail(reason=reason, strict=True, run=False)
                if os.environ.get("CI")
                else pytest.mark.skip(reason=reason)
            )
            item.add_marker(marker)


@pytest.fixture(scope="session", autouse=True)
def _transport_under_test() -> Iterator[None]:
    """``VFIOFS_TRANSPORT=uring`` (the second mount-test run of `make test`) makes every
    daemon serve over io_uring: the kernel must offer it for the whole run."""
    if os.environ.get("VFIOFS_TRANSPORT") != "uring":
        yield
        return
    why = uring_unavailable()
    if why is not None:
        pytest.exit(f"VFIOFS_TRANSPORT=uring: {why}", returncode=1)
    with fuse_uring_parameter(True):
        yield


def is_mounted(path: str | Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def wait_for(cond, timeout: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Daemon:
    """A daemon subprocess serving a mount; its stderr is kept for checks."""

    def __init__(self, argv: list[str], mountpoint: Path, log: Path) -> None:
        self.mountpoint = mountpoint
        self.log = log
        self._logf = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, stdout=self._logf, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def wait_mounted(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"daemon exited {self.proc.returncode}:\n{self.output()}"
                )
            return is_mounted(self.mountpoint)

        wait_for(ready, what=f"mount at {self.mountpoint}")
        os.stat(self.mountpoint)  # waits for INIT

    def output(self) -> str:
        if not self._logf.closed:
            self._logf.flush()
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if is_mounted(self.mountpoint):
            subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)
        self._logf.close()
        return self.proc.returncode


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """``start_daemon(argv_after_python, mountpoint=None) -> Daemon``; always cleaned up,
    and a traceback in the daemon's output fails the test."""
    daemons: list[Daemon] = []

    def start(
        args: list[str], mountpoint: Path | None = None, wait: bool = True
    ) -> Daemon:
        mnt = mountpoint or tmp_path / f"mnt{len(daemons)}"
        mnt.mkdir(exist_ok=True)
        argv = [sys.executable, *[a.replace("{mnt}", str(mnt)) for a in args]]
        d = Daemon(argv, mnt, tmp_path / f"daemon{len(daemons)}.log")
        daemons.append(d)
        if wait:
            d.wait_mounted()
        return d

    yield start
    for d in daemons:
        d.stop()
    for d in daemons:
        out = d.output()
        assert "Traceback" not in out, out


def _compile_c(name: str, *extra: str) -> Path:
    """Compile tests/c/<name>.c (cached by mtime) and return the binary."""
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    src = C_DIR / f"{name}.c"
    out = C_DIR / "bin" / name
    out.parent.mkdir(exist_ok=True)
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(
            ["gcc", "-O1", "-Wall", "-Werror", "-o", str(out), str(src), *extra],
            check=True,
        )
    return out


@pytest.fixture(scope="session")
def compile_c():  # type: ignore[no-untyped-def]
    """``compile_c(name, *gcc_args) -> Path`` of the binary built from tests/c/<name>.c."""
    return _compile_c


@pytest.fixture(scope="session")
def mounted():  # type: ignore[no-untyped-def]
    """``mounted(path) -> bool``: whether path is a mount point."""
    return is_mounted


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp_path is root-only), for mounts that
    unprivileged clients use."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="vfiofs-pub-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)
