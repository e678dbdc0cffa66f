"""The IOMMU page table and type1 bookkeeping, each against a dict-of-pages baseline
measured in the same run (`make bench` prints the table)."""

from __future__ import annotations

import time
from collections.abc import Callable

from vfiofs.iommu.pagetable import IoPageTable

PAGE = 4096
GIB = 1 << 30


def best(fn: Callable[[], object], rounds: int = 5, number: int = 1) -> float:
    """Best time per call, in seconds."""
    out = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        out = min(out, (time.perf_counter() - t0) / number)
    return out


class DictPages:
    """The naive baseline: one dict entry per 4 KiB page."""

    def __init__(self) -> None:
        self.pages: dict[int, tuple[object, int, int]] = {}

    def map(self, iova: int, size: int, owner: object, vaddr: int, prot: int) -> None:
        pages = self.pages
        for off in range(0, size, PAGE):
            pages[(iova + off) >> 12] = (owner, vaddr + off, prot)

    def unmap(self, iova: int, size: int) -> None:
        pages = self.pages
        for off in range(0, size, PAGE):
            pages.pop((iova + off) >> 12, None)

    def translate(self, iova: int) -> object:
        e = self.pages.get(iova >> 12)
        return None if e is None else (e[0], e[1] + (iova & 4095), e[2])


def qemu_guest_ram(t: IoPageTable | DictPages) -> None:
    """64 GiB of guest RAM as QEMU maps it: below and above the 32-bit hole, host memory
    2 MiB aligned (THP), then unmapped."""
    hva = 0x7F0000200000
    t.map(0, 3 * GIB, "qemu", hva, 3)
    t.map(4 * GIB, 61 * GIB, "qemu", hva + 3 * GIB, 3)
    t.unmap(0, 3 * GIB)
    t.unmap(4 * GIB, 61 * GIB)


def main() -> None:
    rows = []

    def one_gib(t: IoPageTable | DictPages) -> None:
        t.map(GIB, GIB, "p", 0x7F0040000000, 3)
        t.unmap(GIB, GIB)

    pt_1g = best(lambda: one_gib(IoPageTable()), number=20)
    base_1g = best(lambda: one_gib(DictPages()), rounds=2)
    rows.append(("MAP+UNMAP 1 GiB, one call", pt_1g * 1e3, base_1g * 1e3, "ms"))
    pt_64 = best(lambda: qemu_guest_ram(IoPageTable()), number=5)
    base_64 = 64 * base_1g  # 64 GiB of dict pages: measured per GiB above, scaled
    rows.append(("MAP+UNMAP 64 GiB guest RAM (QEMU)", pt_64 * 1e3, base_64 * 1e3, "ms"))

    def small(t: IoPageTable | DictPages) -> None:
        for i in range(10000):
            t.map(i * 2 * PAGE, PAGE, "p", 0x10000000 + i * PAGE, 3)
        for i in range(10000):
            t.unmap(i * 2 * PAGE, PAGE)

    pt_small = best(lambda: small(IoPageTable()), rounds=3)
    base_small = best(lambda: small(DictPages()), rounds=3)
    rows.append(
        ("10,000 4 KiB maps + unmaps", 20000 / pt_small, 20000 / base_small, "ops/s")
    )
    pt, dp = IoPageTable(), DictPages()
    for t in (pt, dp):
        t.map(0, 64 << 20, "p", 0x7F0000000000, 3)
    iovas = [(i * 7919 * PAGE) % (64 << 20) + 123 for i in range(10000)]
    pt_tr = best(lambda: [pt.translate(i) for i in iovas]) / len(iovas)
    dp_tr = best(lambda: [dp.translate(i) for i in iovas]) / len(iovas)
    rows.append(("translate", pt_tr * 1e9, dp_tr * 1e9, "ns"))

    print("IOMMU page table vs a dict of 4 KiB pages (best of N, same run)")
    print(f"{'operation':<36}{'page table':>16}{'dict of pages':>16}{'ratio':>12}")
    for name, ours, base, unit in rows:
        ratio = ours / base if unit != "ops/s" else base / ours
        print(
            f"{name:<36}{quantity(ours, unit):>16}{quantity(base, unit):>16}"
            f"{ratio_text(ratio):>12}"
        )
    print("(ratio: time per operation of the page table / of the dict of pages)")


def quantity(value: float, unit: str) -> str:
    """A readable figure: 3 significant digits, ops/s rounded to thousands."""
    if unit == "ops/s":
        return f"{value / 1000:,.0f} k/s" if value < 1e6 else f"{value / 1e6:.1f} M/s"
    if unit == "ms" and value < 1:
        return f"{value * 1000:.3g} µs"
    if unit == "ms" and value >= 1000:
        return f"{value / 1000:.3g} s"
    if unit == "ns" and value >= 1000:
        return f"{value / 1000:.3g} µs"
    return f"{value:.3g} {unit}"


def ratio_text(ratio: float) -> str:
    """x-times, never 0.000x: small ratios as 1/N."""
    if ratio >= 0.1:
        return f"{ratio:.2f}x"
    return f"1/{1 / ratio:,.0f}"


if __name__ == "__main__":
    main()
