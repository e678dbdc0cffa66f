"""A memcpy device behind a nested HWPT on the mock IOMMU, against a model: random
IOAS maps and unmaps (stage 2), DMA writes, dirty tracking on and off, dirty bitmap
reads with and without NO_CLEAR, and mock IOTLB invalidations with partial progress.

The device reaches memory through the nesting parent (vfiofs keeps no guest stage 1),
so its writes dirty the parent's pages; the model says exactly which."""

from __future__ import annotations

import errno
import struct

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.unit.iommufd.conftest import Env, dirty_bitmap, memcpy
from vfiofs.abi import iommufd as I, iommufd_test as T

P = 4096
NPAGES = 32
START = T.MOCK_APERTURE_START
SRC = START + (1 << 20)  # a source page outside the window, mapped once
SELFTEST = T.IOMMU_HWPT_DATA_SELFTEST


class NestedDirty(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.env = env = Env()
        self.ioas = env.ioas()
        self.df, dev = env.bind_pci(0)
        flags = I.IOMMU_HWPT_ALLOC_NEST_PARENT | I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
        rc, self.parent = env.hwpt(dev, self.ioas, flags)
        assert rc == 0
        data = T.IommuHwptSelftest(T.IOMMU_TEST_IOTLB_DEFAULT, 0)
        rc, self.nested = env.hwpt(dev, self.parent, 0, data, SELFTEST)
        assert rc == 0
        assert env.attach_pci(self.df, self.nested) == self.nested
        env.map(self.ioas, SRC, P, va=env.buf + 2 * (1 << 20))
        self.mapped: dict[int, int] = {}  # first page -> npages, per area
        self.tracking = False
        self.dirty: set[int] = set()
        self.iotlb = [T.IOMMU_TEST_IOTLB_DEFAULT] * 4

    def _is_mapped(self, page: int) -> bool:
        return any(a <= page < a + n for a, n in self.mapped.items())

    @rule(page=st.integers(0, NPAGES - 1), n=st.integers(1, 4))
    def map(self, page: int, n: int) -> None:
        n = min(n, NPAGES - page)
        st_ = I.IommuIoasMap(
            40, 7, self.ioas, 0, self.env.buf + page * P, n * P, START + page * P
        )
        rc, _ = self.env.call(I.IOMMU_IOAS_MAP, st_)
        clash = any(self._is_mapped(p) for p in range(page, page + n))
        assert rc == (-errno.EEXIST if clash else 0)
        if not clash:
            self.mapped[page] = n

    @rule(data=st.data())
    def unmap(self, data: st.DataObject) -> None:
        if not self.mapped:
            return
        page = data.draw(st.sampled_from(sorted(self.mapped)))
        n = self.mapped.pop(page)
        self.env.ok(
            I.IOMMU_IOAS_UNMAP, I.IommuIoasUnmap(24, self.ioas, START + page * P, n * P)
        )
        self.dirty -= set(range(page, page + n))  # the IOPTEs and their dirty bits go

    @rule(on=st.booleans())
    def tracking_switch(self, on: bool) -> None:
        st_ = I.IommuHwptSetDirtyTracking(16, int(on), self.parent, 0)
        self.env.ok(I.IOMMU_HWPT_SET_DIRTY_TRACKING, st_)
        if on and not self.tracking:
            self.dirty.clear()
        self.tracking = on

    @rule(data=st.data(), n=st.integers(1, 3), off=st.integers(0, P - 1))
    def dma(self, data: st.DataObject, n: int, off: int) -> None:
        """A copy into a mapped area mostly (so writes land), anywhere sometimes."""
        if self.mapped and data.draw(st.integers(0, 4)):
            area = data.draw(st.sampled_from(sorted(self.mapped)))
            page = area + data.draw(st.integers(0, self.mapped[area] - 1))
        else:
            page = data.draw(st.integers(0, NPAGES - 1))
        length = min(n * P - off, P)  # the source is one page
        status = memcpy(self.env, SRC, START + page * P + off, length)
        first, last = page + off // P, page + (off + length - 1) // P
        ok = all(self._is_mapped(p) for p in range(first, last + 1))
        assert status == (2 if ok else 3)
        if ok and self.tracking:
            self.dirty |= set(range(first, last + 1))

    @rule(clear=st.booleans())
    def read_bitmap(self, clear: bool) -> None:
        flags = 0 if clear else I.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR
        rc, bits = dirty_bitmap(self.env, self.parent, START, NPAGES * P, P, flags)
        if not self.tracking:
            assert rc == -errno.EINVAL
            return
        assert rc == 0
        from hypothesis import event

        event(f"read dirty={len(self.dirty)}")
        assert bits == sum(1 << p for p in self.dirty)
        if clear:
            self.dirty.clear()

    @rule(entries=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 5)), max_size=5))
    def invalidate(self, entries: list[tuple[int, int]]) -> None:
        blob = b"".join(struct.pack("<II", f, i) for f, i in entries)
        uptr = self.env.c.alloc(blob) if blob else 0
        st_ = I.IommuHwptInvalidate(
            32,
            self.nested,
            uptr,
            T.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
            8,
            len(entries),
            0,
        )
        rc, out = self.env.call(I.IOMMU_HWPT_INVALIDATE, st_)
        done, want = 0, 0
        for flags, iotlb_id in entries:
            if flags & ~1:
                want = -errno.EOPNOTSUPP
                break
            if iotlb_id > 3:
                want = -errno.EINVAL
                break
            if flags:
                self.iotlb = [0] * 4
            else:
                self.iotlb[iotlb_id] = 0
            done += 1
        assert (rc, out.entry_num) == (want, done)

    @invariant()
    def iotlb_matches(self) -> None:
        if not hasattr(self, "env"):
            return
        for k, v in enumerate(self.iotlb):
            self.env.test_ok(
                T.IOMMU_TEST_OP_MD_CHECK_IOTLB, self.nested, T.CheckIotlb(k, v)
            )


NestedDirty.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)
TestNestedDirty = NestedDirty.TestCase
