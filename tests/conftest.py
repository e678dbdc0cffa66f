"""Shared test fixtures: real mounts in subprocesses, C clients compiled with gcc, CPU
load. The rules: a mount test that cannot run here skips with its reason, and under CI
(``CI`` set) fails instead; slow tests run with ``--run-slow`` or under CI (``make test``
runs everything)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
C_DIR = ROOT / "tests" / "c"
if str(ROOT) not in sys.path:  # tests.support; example models as examples.module:Class
    sys.path.insert(0, str(ROOT))

from tests.support import (  # noqa: E402
    cannot_run,
    in_ci,
    is_mounted,
    mounts_at,
    wait_for_mount,
)
from tests.transport import fuse_uring_parameter, uring_unavailable  # noqa: E402


def fuse_unavailable() -> str | None:
    """Why a real mount cannot be made here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if os.geteuid() != 0:
        return "mount tests need root"
    return None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        help="run the tests marked slow too (CI=1 does; make test does)",
    )


def _run_slow(config: pytest.Config) -> bool:
    return bool(config.getoption("--run-slow")) or in_ci()


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"CI: {'yes: a test that cannot run fails' if in_ci() else 'no'}"]
    if not _run_slow(config):
        lines.append("slow tests deselected (--run-slow or CI=1 runs them)")
    return lines


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    if _run_slow(config):
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


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


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "mount" in item.keywords:
        reason = fuse_unavailable()
        if reason is not None:
            cannot_run(reason)


class Daemon:
    """A daemon subprocess serving a mount; its stderr is kept for checks."""

    def __init__(self, argv: list[str], mountpoint: Path, log: Path) -> None:
        self.mountpoint = mountpoint
        # mounts already at the mountpoint: ours goes on top of them (--force)
        self.below = len(mounts_at(mountpoint))
        self.log = log
        self._logf = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, stdout=self._logf, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def mounted(self) -> bool:
        """Whether the daemon's own mount (the one above ``below``) is there."""
        return len(mounts_at(self.mountpoint)) > self.below

    def wait_mounted(self) -> None:
        try:
            wait_for_mount(self.mountpoint, self.proc, count=self.below + 1)
        except RuntimeError:
            raise RuntimeError(f"daemon exited:\n{self.output()}") from None
        os.stat(self.mountpoint)  # waits for INIT

    def output(self) -> str:
        if not self._logf.closed:
            self._logf.flush()
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> str | None:
        """Stop the daemon with ``sig`` if it still runs; what was wrong with its
        shutdown (None: exit status 0 and its mount gone). A mount left by a daemon
        the test killed itself is cleared."""
        problem = None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                if (rc := self.proc.wait(timeout=60)) != 0:
                    problem = f"exit status {rc} after signal {sig}"
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problem = f"still running 60 s after signal {sig}"
            if self.mounted():
                problem = problem or "its mount outlived it"
        if self.mounted():  # the top one: daemons are stopped in reverse order
            subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)
        self._logf.close()
        return problem


@contextlib.contextmanager
def _daemons(workdir: Path) -> Iterator:  # type: ignore[type-arg]
    daemons: list[Daemon] = []

    def start(
        args: list[str], mountpoint: Path | None = None, wait: bool = True
    ) -> Daemon:
        mnt = mountpoint or workdir / f"mnt{len(daemons)}"
        mnt.mkdir(exist_ok=True)
        argv = [sys.executable, *[a.replace("{mnt}", str(mnt)) for a in args]]
        d = Daemon(argv, mnt, workdir / f"daemon{len(daemons)}.log")
        daemons.append(d)
        if wait:
            d.wait_mounted()
        return d

    yield start
    problems = [(d, d.stop()) for d in reversed(daemons)]
    for d, problem in problems:
        out = d.output()
        assert problem is None, f"{d.mountpoint}: {problem}\n{out}"
        assert "Traceback" not in out, out


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """``start_daemon(argv_after_python, mountpoint=None) -> Daemon``; always cleaned
    up. The test fails if a daemon's output has a traceback, or if one still running at
    the end does not exit 0 on SIGTERM with its mount gone."""
    with _daemons(tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def start_module_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # type: ignore[type-arg]
    """`start_daemon` for a daemon that the tests of a module share (tests that each
    end by checking the daemon is back where it started)."""
    with _daemons(tmp_path_factory.mktemp("daemons")) as start:
        yield start


def _compile_c(name: str, *extra: str) -> Path:
    """Compile tests/c/<name>.c (cached by mtime) and return the binary."""
    if shutil.which("gcc") is None:
        cannot_run("no gcc (Debian package gcc)")
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
def cpu_hog() -> Iterator[None]:
    """One CPU-burning process per CPU for the length of the test (what a loaded CI
    machine looks like); killed afterwards, by their own pids."""
    hogs = [
        subprocess.Popen(["sh", "-c", "while :; do :; done"])
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield
    finally:
        for h in hogs:
            h.kill()
            h.wait()


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp_path is root-only), for mounts that
    unprivileged clients use."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="vfiofs-pub-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)
