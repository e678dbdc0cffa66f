"""The command the harness runs under ``vfiofs run``: QEMU, then a report of what the
daemon still holds once QEMU has exited.

    python tests/guest/vmm.py REPORT.json -- qemu-system-x86_64 ARGS...

Inside ``vfiofs run`` the daemon's tree is at the real paths, so its debugfs view of every
IOMMU group's mappings (``/sys/kernel/debug/vfiofs/iommu_groups/N/mappings``) can be read
here, after QEMU is gone. SIGTERM and SIGINT are passed on to QEMU. The exit status is
QEMU's. When stdin is a pipe (the harness holds its other end), its end of file means
the harness has gone, and QEMU is stopped too.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

GROUPS = Path("/sys/kernel/debug/vfiofs/iommu_groups")
RELEASE_WAIT = 30.0  # seconds; the daemon answers in milliseconds when idle


def mappings() -> dict[str, list[str]]:
    """IOMMU group -> its mapping lines, as the daemon reports them now."""
    return {
        g.name: (g / "mappings").read_text().splitlines()
        for g in sorted(GROUPS.iterdir())
    }


def main(argv: list[str]) -> int:
    report, sep, *cmd = argv
    if sep != "--" or not cmd:
        print("usage: vmm.py REPORT.json -- QEMU ARGS...", file=sys.stderr)
        return 2
    qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: qemu.send_signal(signum))
    if stat.S_ISFIFO(os.fstat(0).st_mode):

        def stop_when_the_harness_is_gone() -> None:
            while os.read(0, 4096):
                pass
            qemu.terminate()

        threading.Thread(target=stop_when_the_harness_is_gone, daemon=True).start()
    status = qemu.wait()
    # QEMU's files are closed by its exit; the kernel sends the daemon their RELEASE
    # asynchronously, so the container's unmap-all can land a moment after the exit.
    deadline = time.monotonic() + RELEASE_WAIT
    left = mappings()
    while any(left.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
        left = mappings()
    Path(report).write_text(
        json.dumps({"qemu_status": status, "mappings_left": left}) + "\n"
    )
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
