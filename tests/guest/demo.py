"""``make guest-demo``: boot the guest under ``vfiofs run`` with a serial console on this
terminal, to look around (``lspci -nnk``, ``sh /checks/mtty.sh``, ``cat /proc/interrupts``).
``poweroff -f`` in the guest, or Ctrl-A X, ends it.

    python -m tests.guest.demo [--config TOPOLOGY] [BDF ...]
        default: the built-in topology's 0000:00:04.0 0000:00:05.0 0000:00:05.1
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.guest import image
from tests.guest.harness import CHECKS, QEMU, ROOT, overlay_initrd

DEFAULT_DEVICES = ["0000:00:04.0", "0000:00:05.0", "0000:00:05.1"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="topology file (default: the built-in topology)")
    p.add_argument("--image", type=Path, default=image.DEFAULT_DIR)
    p.add_argument("devices", nargs="*", default=DEFAULT_DEVICES)
    args = p.parse_args()
    img = image.build(args.image)
    with tempfile.TemporaryDirectory(prefix="vfiofs-guest-demo-") as tmp:
        initrd = Path(tmp) / "initrd.gz"
        overlay_initrd(
            img / "initrd.gz",
            initrd,
            {f"checks/{c.name}": c for c in sorted(CHECKS.glob("*.sh"))},
        )
        argv = [sys.executable, "-m", "vfiofs", "run"]
        if args.config:
            argv += ["--config", args.config]
        argv += [
            "--", QEMU, "-machine", "q35,accel=tcg", "-m", "512", "-smp", "1",
            "-nodefaults", "-no-user-config", "-nographic", "-serial", "mon:stdio",
            "-kernel", str(img / "vmlinux"), "-initrd", str(initrd),
            "-append", "console=ttyS0 panic=-1 quiet",
        ]  # fmt: skip
        for i, bdf in enumerate(args.devices):
            argv += ["-device", f"vfio-pci,host={bdf},addr={0x10 + i:02x}.0"]
        print(f"guest: {' '.join(args.devices)} at 00:10.0 and up; Ctrl-A X quits")
        return subprocess.run(argv, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
