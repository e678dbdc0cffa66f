"""`make bench`: every benchmark, each printed as a ratio against a baseline measured in
the same run (never a timed test: these machines are small and noisy).

1. FUSE round trips: vfiofs's session against a minimal C server on libfuse3's low-level
   API, for a no-op ioctl, an ioctl copying 64 bytes in and out, and a 4-byte pread. Client
   and daemon are pinned to one CPU.
2. The IOMMU page table against a dict of pages (bench/bench_iommu.py).
3. Load: 8 processes x 1000 full cycles against one mount (bench/load.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = HERE / "bin"
N = int(os.environ.get("VFIOFS_BENCH_N", "20000"))
ROUNDS = 5


def build() -> tuple[Path, Path]:
    BIN.mkdir(exist_ok=True)
    client, server = BIN / "client", BIN / "cserver"
    subprocess.run(
        ["gcc", "-O2", "-o", str(client), str(HERE / "client.c")], check=True
    )
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "fuse3"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    subprocess.run(
        ["gcc", "-O2", "-o", str(server), str(HERE / "cserver.c"), *flags], check=True
    )
    return client, server


def mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def measure(server_argv: list[str], client: Path, ops: list[str]) -> dict[str, float]:
    mnt = tempfile.mkdtemp(prefix="vfiofs-bench-")
    proc = subprocess.Popen(["taskset", "-c", "0", *server_argv, mnt])
    try:
        deadline = time.monotonic() + 20
        while not mounted(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{server_argv[0]} did not mount")
            time.sleep(0.01)
        os.stat(mnt)
        path = os.path.join(mnt, "bench")
        out = {}
        for op in ops:
            subprocess.run(
                ["taskset", "-c", "0", str(client), path, op, str(N // 10)],
                check=True,
                capture_output=True,
            )
            best = min(
                float(
                    subprocess.run(
                        ["taskset", "-c", "0", str(client), path, op, str(N)],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                )
                for _ in range(ROUNDS)
            )
            out[op] = best
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run(["umount", "-l", mnt], check=False, capture_output=True)
        os.rmdir(mnt)


def fuse_bench() -> None:
    client, server = build()
    ops = ["noop", "copy64", "pread4"]
    c = measure([str(server)], client, ops)
    py = measure([sys.executable, str(HERE / "benchfs.py")], client, ops)
    print(f"FUSE round trip, best of {ROUNDS} x {N} calls, client and daemon on CPU 0")
    print(f"{'operation':<34}{'libfuse C':>12}{'vfiofs':>12}{'ratio':>8}")
    names = {
        "noop": "no-op ioctl",
        "copy64": "ioctl copying 64 B in and out",
        "pread4": "4-byte pread",
    }
    for op in ops:
        print(
            f"{names[op]:<34}{c[op]:>10.0f}ns{py[op]:>10.0f}ns{py[op] / c[op]:>7.2f}x"
        )
    print()


def main() -> None:
    if os.geteuid() != 0 or shutil.which("taskset") is None:
        print("the FUSE benchmark needs root and taskset; skipped")
    else:
        fuse_bench()
    subprocess.run([sys.executable, str(HERE / "bench_iommu.py")], check=True)
    print()
    if os.geteuid() == 0:
        subprocess.run([sys.executable, str(HERE / "load.py"), "8", "1000"], check=True)


if __name__ == "__main__":
    main()
