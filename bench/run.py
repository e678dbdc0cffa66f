"""`make bench`: every benchmark, each row a time ratio against a baseline measured in the
same run (never a timed test: these machines are small and noisy).

1. FUSE round trips against a minimal C server on libfuse3's low-level API
   (bench/cserver.c), for vfiofs over each transport (/dev/fuse read/write, and FUSE
   over io_uring when the kernel can offer it). The first rows use bench/benchfs.py
   (vfiofs's session serving the C server's operations); the VFIO rows go through the
   whole stack of a real ``vfiofs mount`` against the C server doing the same copies.
   Client and daemon are pinned to CPU 0; the two-client row pins one client to each
   CPU, leaves the servers free and runs the C server's multi-threaded loop.
   Each figure is the median of 5 runs, with the spread (min-max) of the 5.
2. The caller-memory paths (bench/caller_memory.py).
3. The IOMMU page table against a dict of pages (bench/bench_iommu.py).
4. Load: 8 processes x 1000 full cycles against one mount (bench/load.py).

The io_uring rows set /sys/module/fuse/parameters/enable_uring for their servers and
restore it afterwards (vfiofs itself never changes it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = HERE / "bin"
N = int(os.environ.get("VFIOFS_BENCH_N", "20000"))
RUNS = 5
ENABLE_URING = Path("/sys/module/fuse/parameters/enable_uring")

# (row, baseline op on the C server, vfiofs server, vfiofs op)
ROWS = [
    ("no-op ioctl", "noop", "benchfs", "noop"),
    ("ioctl copying 64 B in and out", "copy64", "benchfs", "copy64"),
    ("4-byte pread", "pread4", "benchfs", "pread4"),
    ("VFIO_DEVICE_GET_REGION_INFO", "copy32", "vfiofs", "region"),
    ("4-byte config-space pread", "pread4", "vfiofs", "cfg4"),
    ("MAP_DMA + UNMAP_DMA 4 KiB", "dma2", "vfiofs", "mapdma"),
]
TWO_CLIENTS = "2 clients on 2 CPUs, 64 B ioctl"


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


@contextlib.contextmanager
def serving(argv: list[str], env: dict[str, str], cpu: str | None) -> Iterator[str]:
    """A server mounted at a fresh directory (its path), stopped and unmounted after."""
    mnt = tempfile.mkdtemp(prefix="vfiofs-bench-")
    pin = ["taskset", "-c", cpu] if cpu else []
    proc = subprocess.Popen([*pin, *argv, mnt], env=env)
    try:
        deadline = time.monotonic() + 30
        while not mounted(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv} did not mount")
            time.sleep(0.01)
        os.stat(mnt)
        yield mnt
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", "-l", mnt], check=False, capture_output=True)
        os.rmdir(mnt)


def client_ns(client: Path, path: str, op: str, n: int, cpu: str = "0") -> float:
    out = subprocess.run(
        ["taskset", "-c", cpu, str(client), path, op, str(n)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout)


def runs(client: Path, path: str, op: str) -> list[float]:
    client_ns(client, path, op, max(N // 10, 100))  # warm up
    return [client_ns(client, path, op, N) for _ in range(RUNS)]


def two_clients(client: Path, path: str) -> list[float]:
    """ns per operation of the pair (one client per CPU), per run."""
    out = []
    for _ in range(RUNS):
        procs = [
            subprocess.Popen(
                ["taskset", "-c", cpu, str(client), path, "copy64", str(N)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for cpu in ("0", "1")
        ]
        slowest = max(float(p.communicate()[0]) for p in procs)
        out.append(slowest / 2)  # 2 N operations in the slowest client's time
    return out


@contextlib.contextmanager
def uring_parameter() -> Iterator[bool]:
    """enable_uring set to Y for the io_uring rows (and restored); False if it cannot."""
    if not ENABLE_URING.exists() or os.geteuid() != 0:
        yield False
        return
    old = ENABLE_URING.read_text().strip()
    ENABLE_URING.write_text("Y")
    try:
        yield True
    finally:
        ENABLE_URING.write_text(old)


def measure(client: Path, server: Path) -> dict[tuple[str, str], list[float]]:
    """(configuration, op) -> ns per call of each run."""
    py = [sys.executable]
    benchfs = [*py, str(HERE / "benchfs.py")]
    vfiofs = [*py, "-m", "vfiofs", "mount"]
    env = dict(os.environ)
    results: dict[tuple[str, str], list[float]] = {}

    def bench_ops(config: str, argv: list[str], ops: list[str], target: str) -> None:
        with serving(argv, env, "0") as mnt:
            path = os.path.join(mnt, "bench") if target == "file" else mnt
            for op in ops:
                results[config, op] = runs(client, path, op)

    base_ops = sorted({r[1] for r in ROWS})
    bench_ops("C", [str(server)], base_ops, "file")
    with serving([str(server), "-mt"], env, None) as mnt:
        results["C-mt", "two"] = two_clients(client, os.path.join(mnt, "bench"))
    with uring_parameter() as can_uring:
        transports = ["dev", "uring"] if can_uring else ["dev"]
        for t in transports:
            env["VFIOFS_TRANSPORT"] = t
            ops = [r[3] for r in ROWS if r[2] == "benchfs"]
            bench_ops(t, benchfs, ops, "file")
            ops = [r[3] for r in ROWS if r[2] == "vfiofs"]
            bench_ops(t, vfiofs, ops, "root")
            with serving(benchfs, env, None) as mnt:
                results[t, "two"] = two_clients(client, os.path.join(mnt, "bench"))
    return results


def fmt_time(ns: float) -> str:
    return f"{ns / 1000:.1f} µs"


def spread(values: list[float]) -> str:
    med = statistics.median(values)
    return f"±{(max(values) - min(values)) / 2 / med * 100:.0f}%"


def table(results: dict[tuple[str, str], list[float]]) -> None:
    transports = [t for t in ("dev", "uring") if (t, "noop") in results]
    print(
        f"FUSE round trips: median of {RUNS} runs x {N} calls (spread: half the "
        "min-max range); ratio = vfiofs time / C time (below 1.00x: vfiofs is faster)"
    )
    head = f"{'operation':<42}{'libfuse3 C':>18}"
    for t in transports:
        head += f"{'vfiofs ' + t:>20}{'ratio':>8}"
    print(head)
    for name, base_op, _, op in ROWS:
        base = results["C", base_op]
        line = f"{name:<42}{fmt_time(statistics.median(base)):>11} {spread(base):>6}"
        for t in transports:
            ours = results[t, op]
            ratio = statistics.median(ours) / statistics.median(base)
            line += f"{fmt_time(statistics.median(ours)):>13} {spread(ours):>6}{ratio:>7.2f}x"
        print(line)
    base = results["C-mt", "two"]
    line = f"{TWO_CLIENTS:<42}{ops_s(base):>11} {spread(base):>6}"
    for t in transports:
        ours = results[t, "two"]
        ratio = statistics.median(ours) / statistics.median(base)
        line += f"{ops_s(ours):>13} {spread(ours):>6}{ratio:>7.2f}x"
    print(line)
    print(
        "(the VFIO rows run a real vfiofs mount, whole stack, against the C server "
        "doing the same copies: 32 B in and out; 32 B in + 24 B in and out; the "
        "two-client row is throughput, against the C server's multi-threaded loop)"
    )
    if "uring" not in transports:
        print("(no io_uring rows: needs root and CONFIG_FUSE_IO_URING)")
    print()


def ops_s(values: list[float]) -> str:
    per_s = 1e9 / statistics.median(values)
    return f"{round(per_s, -3) / 1000:.0f} k/s"


def main() -> None:
    if os.geteuid() != 0 or shutil.which("taskset") is None:
        print("the FUSE benchmark needs root and taskset; skipped")
    else:
        client, server = build()
        table(measure(client, server))
    subprocess.run([sys.executable, str(HERE / "caller_memory.py")], check=True)
    print()
    subprocess.run([sys.executable, str(HERE / "bench_iommu.py")], check=True)
    print()
    if os.geteuid() == 0:
        subprocess.run([sys.executable, str(HERE / "load.py"), "8", "1000"], check=True)


if __name__ == "__main__":
    main()
