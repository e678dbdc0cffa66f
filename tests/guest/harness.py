"""Boot the guest image under QEMU 7.2 (TCG) inside ``vfiofs run`` and drive it over its
serial console.

    with Guest(workdir, ["0000:00:05.0"]) as g:
        g.wait_ready()                       # the guest's init reads commands now
        result = g.check("mtty")             # runs /checks/mtty.sh, parses its result line
        report = g.poweroff()                # QEMU exits; what the daemon still holds

The console is a UNIX socket the harness listens on and QEMU connects to
(``-chardev socket``), so the harness sees every byte from the start of the boot. The
guest's init (``rootfs/init``, with ``vfiofs.harness`` on the kernel command line) reads one
command per line and ends each command's output with ``@@vfiofs-done <status>``; checks
print one ``@@vfiofs-result <json>`` line. Every wait has a deadline and ends early if QEMU
exits or the guest kernel panics. QEMU runs through ``vmm.py``, which, once QEMU is gone,
reads the daemon's debugfs mappings view from inside ``vfiofs run`` into a JSON report;
it also stops QEMU if the harness process goes away without `Guest.close`.

The check scripts (``checks/*.sh``) are not in the image: each boot appends them to the
initramfs as a second cpio archive (the kernel unpacks concatenated archives in order), so
editing a check needs no image rebuild.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.guest.image import DEFAULT_DIR, Cpio

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CHECKS = HERE / "checks"
QEMU = "qemu-system-x86_64"
GUEST_SLOT0 = 0x10  # passed-through devices sit at 00:10.0, 00:11.0, ... in the guest

READY = re.compile(r"@@vfiofs-ready (?P<info>[^\r\n]*)\r?\n")
DONE = re.compile(r"@@vfiofs-done (?P<status>\d+)\r?\n")
RESULT = re.compile(r"^@@vfiofs-result (\{.*\})$", re.MULTILINE)
PANIC = re.compile(r"Kernel panic - not syncing[^\r\n]*")


class GuestError(AssertionError):
    """The guest did not do what the harness waited for; the message carries the tail
    of the console and of the daemon's log."""


def overlay_initrd(base: Path, out: Path, extra: dict[str, Path]) -> None:
    """``base`` followed by a gzipped cpio holding ``extra`` (path in the guest -> file)."""
    cpio = Cpio()
    for name, src in sorted(extra.items()):
        cpio.file(name, src.read_bytes(), 0o755)
    with open(out, "wb") as f:
        data = base.read_bytes()
        f.write(data)
        f.write(b"\0" * (-len(data) % 4))
        f.write(cpio.gzip())


class Guest:
    """One QEMU process under one ``vfiofs run`` daemon, with the guest on its console.

    ``devices`` are host BDFs from the topology; device i appears in the guest at
    ``00:{0x10 + i}.0`` (`guest_slot`). ``reboot=True`` lets a guest reboot reset the
    machine instead of ending QEMU. ``trace=True`` runs the daemon with ``--trace``
    (one line per FUSE request in `daemon_log`).
    """

    def __init__(
        self,
        workdir: Path,
        devices: Sequence[str],
        *,
        image: Path = DEFAULT_DIR,
        config: Path | None = None,
        reboot: bool = False,
        trace: bool = False,
        memory_mib: int = 512,
        boot_timeout: float = 240.0,
        command_timeout: float = 120.0,
    ) -> None:
        self.workdir = workdir
        self.devices = list(devices)
        self.image = image
        self.config = config
        self.reboot_allowed = reboot
        self.trace = trace
        self.memory_mib = memory_mib
        self.boot_timeout = boot_timeout
        self.command_timeout = command_timeout
        self.console_log = workdir / "console.log"
        self.daemon_log = workdir / "daemon.log"
        self.report_path = workdir / "report.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.boots: list[dict[str, Any]] = []
        self._sockdir: str | None = None
        self._console: socket.socket | None = None
        self._pidfd = -1
        self._buf = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._logf: Any = None
        self._started = 0.0
        self._reboot_at = 0.0

    # --- lifecycle --------------------------------------------------------------------

    def guest_slot(self, bdf: str) -> str:
        """Where host device ``bdf`` appears in the guest (``0000:00:10.0`` ...)."""
        return f"0000:00:{GUEST_SLOT0 + self.devices.index(bdf):02x}.0"

    def qemu_argv(self, console: str) -> list[str]:
        append = "console=ttyS0 panic=-1 quiet vfiofs.harness"
        argv = [
            QEMU,
            "-machine", "q35,accel=tcg",
            "-m", str(self.memory_mib),
            "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-chardev", f"socket,id=console,path={console}",
            "-serial", "chardev:console",
            "-kernel", str(self.image / "vmlinux"),
            "-initrd", str(self.workdir / "initrd.gz"),
            "-append", append,
        ]  # fmt: skip
        if not self.reboot_allowed:
            argv.append("-no-reboot")
        for bdf in self.devices:
            argv += ["-device", f"vfio-pci,host={bdf},addr={self.guest_slot(bdf)[8:]}"]
        return argv

    def start(self) -> None:
        overlay_initrd(
            self.image / "initrd.gz",
            self.workdir / "initrd.gz",
            {f"checks/{p.name}": p for p in sorted(CHECKS.glob("*.sh"))},
        )
        # a short path: sun_path holds 108 bytes, pytest's tmp_path can be longer
        self._sockdir = tempfile.mkdtemp(prefix="vfiofs-guest-", dir="/tmp")
        console_path = os.path.join(self._sockdir, "console")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(console_path)
        listener.listen(1)
        argv = [sys.executable, "-m", "vfiofs", "run"]
        if self.config:
            argv += ["--config", str(self.config)]
        if self.trace:
            argv.append("--trace")
        argv += ["--", sys.executable, str(HERE / "vmm.py"), str(self.report_path)]
        argv += ["--", *self.qemu_argv(console_path)]
        self._logf = open(self.console_log, "w")  # noqa: SIM115
        with open(self.daemon_log, "wb") as daemon_log:
            self._started = time.monotonic()
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdin=subprocess.PIPE,  # vmm.py stops QEMU when this closes
                stdout=daemon_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # one process group: QEMU, vmm.py, the daemon
            )
        self._pidfd = os.pidfd_open(self.proc.pid)
        with listener:
            deadline = self._started + self.boot_timeout
            while not self._wait_readable(listener, deadline):
                pass
            self._console, _ = listener.accept()
        self._console.setblocking(False)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop everything still running (SIGTERM, then SIGKILL to the process group)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # vfiofs run passes it to vmm.py
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
        if self._console is not None:
            self._drain()
            self._console.close()
            self._console = None
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        if self._logf is not None:
            self._logf.close()
            self._logf = None
        if self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None

    # --- the console ----------------------------------------------------------------

    def _wait_readable(self, sock: socket.socket, deadline: float) -> bool:
        """Wait until ``sock`` is readable (True) or time passes (False); raise if the
        deadline is reached or the process group's leader exits first."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._error("timed out")
        ready, _, _ = select.select([sock, self._pidfd], [], [], min(left, 5.0))
        if sock in ready:
            return True
        if self._pidfd in ready:
            self._drain()
            raise self._error(f"vfiofs run exited with status {self.proc.wait()}")  # type: ignore[union-attr]
        return False

    def _read_some(self) -> bool:
        assert self._console is not None
        try:
            data = self._console.recv(65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        text = self._decoder.decode(data)
        self._buf += text
        self._logf.write(text)
        self._logf.flush()
        return True

    def _drain(self) -> None:
        """Read whatever the console still holds, without waiting."""
        if self._console is None:
            return
        while True:
            try:
                data = self._console.recv(65536)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            text = self._decoder.decode(data)
            self._buf += text
            if self._logf is not None:
                self._logf.write(text)

    def expect(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """Consume console output up to the first match of ``pattern``."""
        assert self._console is not None
        deadline = time.monotonic() + timeout
        while True:
            m = pattern.search(self._buf)
            if m:
                self._buf = self._buf[m.end() :]
                return m
            panic = PANIC.search(self._buf)
            if panic:
                raise self._error(f"guest kernel panic: {panic.group(0)}")
            if self._wait_readable(self._console, deadline) and not self._read_some():
                raise self._error(f"console closed while waiting for {pattern.pattern}")

    def send(self, line: str) -> None:
        assert self._console is not None and "\n" not in line
        self._console.setblocking(True)
        try:
            self._console.sendall(line.encode() + b"\n")
        finally:
            self._console.setblocking(False)

    def _error(self, what: str) -> GuestError:
        console = self.console_log.read_text(errors="replace")[-4000:]
        daemon = self.daemon_log.read_text(errors="replace")[-3000:]
        return GuestError(
            f"{what}\n--- console (last 4000 chars) ---\n{console}"
            f"\n--- vfiofs run / QEMU (last 3000 chars) ---\n{daemon}"
        )

    # --- what the tests call --------------------------------------------------------

    def wait_ready(self) -> dict[str, Any]:
        """Wait for the guest's ready line; returns its fields plus ``wall_s`` (seconds
        since QEMU was started, or since the reboot was asked for)."""
        since = self._started if not self.boots else self._reboot_at
        m = self.expect(READY, self.boot_timeout)
        info: dict[str, Any] = dict(
            kv.split("=", 1) for kv in m.group("info").split() if "=" in kv
        )
        info["uptime"] = float(info["uptime"])
        info["wall_s"] = round(time.monotonic() - since, 2)
        self.boots.append(info)
        return info

    def run(self, command: str, timeout: float | None = None) -> tuple[int, str]:
        """Run one shell command in the guest; (exit status, its console output)."""
        self.send(command)
        m = self.expect(DONE, timeout or self.command_timeout)
        # the output is what came before the marker (the tty echoes the command first)
        out = m.string[: m.start()]
        lines = out.replace("\r\n", "\n").split("\n")
        if lines and lines[0].strip() == command.strip():
            lines = lines[1:]
        return int(m.group("status")), "\n".join(lines)

    def check(
        self, name: str, *args: str, timeout: float | None = None
    ) -> dict[str, Any]:
        """Run ``/checks/<name>.sh ARGS``; its result line as a dict. A failing check
        raises GuestError with its output."""
        command = " ".join(["sh", f"/checks/{name}.sh", *args])
        status, out = self.run(command, timeout)
        results = RESULT.findall(out)
        if status != 0 or len(results) != 1:
            raise self._error(f"check {command!r} exited {status}; output:\n{out}")
        result: dict[str, Any] = json.loads(results[0])
        return result

    def reboot(self) -> dict[str, Any]:
        """``reboot -f`` in the guest (QEMU resets the machine), then wait for the next
        boot's ready line."""
        assert self.reboot_allowed, "start the Guest with reboot=True"
        self._reboot_at = time.monotonic()
        self.send("reboot -f")
        return self.wait_ready()

    def poweroff(self, timeout: float = 120.0) -> dict[str, Any]:
        """``poweroff -f`` in the guest; waits for QEMU and ``vfiofs run`` to exit and
        returns vmm.py's report (QEMU's status and the mappings left in the daemon)."""
        assert self.proc is not None
        self.send("poweroff -f")
        deadline = time.monotonic() + timeout
        assert self._console is not None
        try:
            while self._wait_readable(self._console, deadline) and self._read_some():
                pass  # the guest's last words, until QEMU closes the console
        except GuestError:
            if self.proc.poll() is None:
                raise
        self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        self._drain()
        if self.proc.returncode != 0 or not self.report_path.exists():
            raise self._error(f"vfiofs run exited with status {self.proc.returncode}")
        report: dict[str, Any] = json.loads(self.report_path.read_text())
        report["wall_s"] = round(time.monotonic() - self._started, 2)
        return report

    def daemon_output(self) -> str:
        """What ``vfiofs run`` (its log, QEMU's stderr, and with trace=True one line per
        FUSE request) printed so far."""
        return self.daemon_log.read_text(errors="replace")
