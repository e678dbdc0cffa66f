"""How the daemon writes a caller's memory, measured: `make bench` prints the cost of
one 64-byte copy_to_user for each way of doing it (the daemon writes to itself here, so
the kernel work is the same as for a client; what differs is the Python side).

- process_vm_writev through ctypes, as `vfiofs.session.peer` does (honours page
  protections, as copy_to_user does);
- a pwrite(2) to /proc/PID/mem (one plain system call, but FOLL_FORCE: it writes
  read-only pages too, so it needs a protection check first: a parse of
  /proc/PID/maps, also measured);
- a pread(2) from /proc/PID/mem (copy_from_user) for comparison.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import time

from vfiofs.session.peer import ProcessMemory

N = int(os.environ.get("VFIOFS_BENCH_MEM_N", "200000"))


def per_call(fn, n: int = N) -> float:  # type: ignore[no-untyped-def]
    """Median over 5 runs of ``n`` calls, in ns per call."""
    runs = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter_ns() - t0) / n)
    return sorted(runs)[2]


def main() -> None:
    page = mmap.mmap(-1, 4096)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    mm = ProcessMemory(os.getpid())
    data = bytes(range(64))
    memfd = os.open(f"/proc/{os.getpid()}/mem", os.O_RDWR)
    rows = [
        ("process_vm_writev (ctypes), 64 B", lambda: mm.write_live(addr, data)),
        ("pwrite /proc/PID/mem, 64 B", lambda: os.pwrite(memfd, data, addr)),
        ("pread /proc/PID/mem, 64 B", lambda: mm.read(addr, 64)),
        (
            "protection check (parse /proc/PID/maps)",
            lambda: mm.check_range(addr, 64, write=True),
        ),
    ]
    print("caller memory, median of 5 runs (ns per call)")
    for name, fn in rows:
        print(
            f"  {name:<44}{per_call(fn, N if 'maps' not in name else N // 100):>8.0f}"
        )
    os.close(memfd)
    mm.close()


if __name__ == "__main__":
    main()
