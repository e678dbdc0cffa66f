"""Random IOAS_MAP / IOAS_COPY / IOAS_UNMAP / IOAS_ALLOW_IOVAS sequences agree with a plain
model of the iommufd rules (results, errnos, chosen IOVAs inside the allowed ranges)."""

from __future__ import annotations

import errno
import struct

from hypothesis import given, settings, strategies as st

from vfiofs.abi import iommufd as I
from vfiofs.errors import KernelError
from vfiofs.iommufd.iommufd_private import IommufdCtx
from vfiofs.iommufd.main import iommufd_fops_open
from vfiofs.uaccess import FakeCaller

P = 4096
R, W, FIXED = (
    I.IOMMU_IOAS_MAP_READABLE,
    I.IOMMU_IOAS_MAP_WRITEABLE,
    I.IOMMU_IOAS_MAP_FIXED_IOVA,
)

op = st.one_of(
    st.tuples(st.just("map"), st.integers(0, 31), st.integers(1, 6), st.booleans()),
    st.tuples(st.just("unmap"), st.integers(0, 31), st.integers(1, 8), st.just(False)),
    st.tuples(
        st.just("copy"), st.integers(0, 31), st.integers(1, 4), st.integers(0, 31)
    ),
    st.tuples(st.just("allow"), st.integers(0, 24), st.integers(8, 40), st.just(False)),
)


def run(ctx: IommufdCtx, c: FakeCaller, cmd: int, st_: object) -> tuple[int, bytes]:
    raw = st_.pack()  # type: ignore[attr-defined]
    arg = c.alloc(raw)
    try:
        return ctx.ioctl(c, cmd, arg), c.mm.read(arg, len(raw))
    except KernelError as e:
        return -e.errno, b""


@settings(max_examples=80, deadline=None)
@given(st.lists(op, max_size=20))
def test_iommufd_matches_model(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    c = FakeCaller()
    c.mm.size = 4 << 20
    c.mm.__attrs_post_init__()
    ctx = iommufd_fops_open()
    _, out = run(ctx, c, I.IOMMU_IOAS_ALLOC, I.IommuIoasAlloc(12, 0, 0))
    a = I.IommuIoasAlloc.unpack_from(out).out_ioas_id
    areas: dict[int, int] = {}  # iova page -> pages
    allowed: tuple[int, int] | None = None
    va = c.mm.base + (1 << 20)

    def overlaps(lo: int, n: int) -> bool:
        return any(i < lo + n and lo < i + k for i, k in areas.items())

    for kind, x, n, extra in ops:
        if kind == "map":
            flags = R | W | (FIXED if extra else 0)
            rc, out = run(
                ctx,
                c,
                I.IOMMU_IOAS_MAP,
                I.IommuIoasMap(40, flags, a, 0, va, n * P, x * P),
            )
            if extra:
                want = -errno.EEXIST if overlaps(x, n) else 0
                assert rc == want
            else:
                if rc == -errno.ENOSPC:
                    continue
                assert rc == 0
            if rc == 0:
                got = I.IommuIoasMap.unpack_from(out).iova
                assert got % P == 0
                page = got // P
                assert not overlaps(page, n)
                if not extra:
                    assert got != 0
                    if allowed is not None:
                        assert allowed[0] <= page and page + n - 1 <= allowed[1]
                areas[page] = n
        elif kind == "unmap":
            rc, out = run(
                ctx, c, I.IOMMU_IOAS_UNMAP, I.IommuIoasUnmap(24, a, x * P, n * P)
            )
            hit = [i for i, k in areas.items() if i < x + n and x < i + k]
            if not hit or any(i < x or i + areas[i] > x + n for i in hit):
                assert rc == -errno.ENOENT
                # mappings removed before the bisecting one stay removed (kernel order)
                for i in sorted(hit):
                    if i < x or i + areas[i] > x + n:
                        break
                    del areas[i]
            else:
                assert rc == 0
                assert (
                    I.IommuIoasUnmap.unpack_from(out).length
                    == sum(areas.pop(i) for i in hit) * P
                )
        elif kind == "copy":
            src, dst = x, extra
            covered = all(
                any(i <= p < i + k for i, k in areas.items())
                for p in range(src, src + n)
            )
            rc, _ = run(
                ctx,
                c,
                I.IOMMU_IOAS_COPY,
                I.IommuIoasCopy(40, R | FIXED, a, a, n * P, dst * P, src * P),
            )
            if not covered:
                assert rc == -errno.ENOENT
            elif overlaps(dst, n):
                assert rc == -errno.EEXIST
            else:
                assert rc == 0
                # one destination area per source area piece (iopt_get_pages)
                for i, k in sorted(areas.items()):
                    lo, hi = max(i, src), min(i + k, src + n)
                    if lo < hi:
                        areas[dst + lo - src] = hi - lo
        else:
            lo, hi = x, x + n
            ranges = c.alloc(struct.pack("<QQ", lo * P, hi * P - 1))
            rc, _ = run(
                ctx,
                c,
                I.IOMMU_IOAS_ALLOW_IOVAS,
                I.IommuIoasAllowIovas(24, a, 1, 0, ranges),
            )
            assert rc == 0
            allowed = (lo, hi - 1)
    ioas = ctx.objects[a]
    assert {ar.iova // P: ar.length // P for ar in ioas.iopt.areas} == areas  # type: ignore[attr-defined]
