"""The IOMMU page table against a dict of pages."""

from __future__ import annotations

import errno

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from vfiofs.errors import KernelError
from vfiofs.iommu.pagetable import IoPageTable

PAGE = 4096
# a small IOVA window with room for 2 MiB and 1 GiB leaves at its edges
IOVA_PAGES = st.sampled_from(
    [0, 1, 2, 511, 512, 513, 1023, 262143, 262144, 262145, 524288]
)
SIZES = st.sampled_from([1, 2, 3, 511, 512, 513, 1024, 262144])
VADDRS = st.sampled_from([0, 1, 512, 262144, 7 * 262144 + 512])


class PageTableModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pt = IoPageTable(39)
        self.model: dict[int, tuple[str, int, int]] = {}  # page -> (owner, vaddr, prot)

    @rule(
        page=IOVA_PAGES,
        npages=SIZES,
        vpage=VADDRS,
        owner=st.sampled_from(["a", "b"]),
        prot=st.sampled_from([1, 2, 3]),
    )
    def map(self, page: int, npages: int, vpage: int, owner: str, prot: int) -> None:
        pages = range(page, page + npages)
        try:
            self.pt.map(page * PAGE, npages * PAGE, owner, vpage * PAGE, prot)
        except KernelError as e:
            assert e.errno == errno.EEXIST
            assert any(p in self.model for p in pages)
            return
        assert not any(p in self.model for p in pages)
        for i, p in enumerate(pages):
            self.model[p] = (owner, (vpage + i) * PAGE, prot)

    @rule(page=IOVA_PAGES, npages=SIZES)
    def unmap(self, page: int, npages: int) -> None:
        gone = [p for p in range(page, page + npages) if p in self.model]
        assert self.pt.unmap(page * PAGE, npages * PAGE) == len(gone) * PAGE
        for p in gone:
            del self.model[p]

    @rule(page=IOVA_PAGES, off=st.integers(0, PAGE - 1))
    def translate(self, page: int, off: int) -> None:
        t = self.pt.translate(page * PAGE + off)
        want = self.model.get(page)
        if want is None:
            assert t is None
        else:
            assert t is not None and (t.owner, t.vaddr, t.prot) == (
                want[0],
                want[1] + off,
                want[2],
            )

    @invariant()
    def walk_matches_model(self) -> None:
        pages = {}
        for m in self.pt.walk():
            for i in range(m.size // PAGE):
                pages[m.iova // PAGE + i] = (m.owner, m.vaddr + i * PAGE, m.prot)
        assert pages == self.model
        assert self.pt.mapped_bytes == len(self.model) * PAGE


# 50-200 s on a 2-core machine (walk_matches_model expands every mapping page by page)
TestPageTable = pytest.mark.slow(PageTableModel.TestCase)
TestPageTable.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None
)


def test_pagetable_picks_the_largest_leaves() -> None:
    pt = IoPageTable(48)
    pt.map(1 << 30, 1 << 30, "o", 3 << 30, 3)
    assert pt.leaf_sizes() == {1 << 30: 1}
    pt.map(4 << 30, 4 << 20, "o", 2 << 20, 3)  # vaddr only 2 MiB aligned
    assert pt.leaf_sizes() == {1 << 30: 1, 2 << 20: 2}
    assert pt.unmap((1 << 30) + PAGE, PAGE) == PAGE  # splits 1G -> 2M + 4K leaves
    assert pt.leaf_sizes() == {2 << 20: 511 + 2, PAGE: 511}


@pytest.mark.parametrize(
    ("iova", "size"),
    [(1, PAGE), (0, 100), (0, 0), (1 << 48, PAGE), ((1 << 48) - PAGE, 2 * PAGE)],
)
def test_pagetable_rejects_bad_ranges(iova: int, size: int) -> None:
    with pytest.raises(KernelError) as e:
        IoPageTable(48).map(iova, size, "o", 0, 3)
    assert e.value.errno == errno.EINVAL
