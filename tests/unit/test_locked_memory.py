"""RLIMIT_MEMLOCK and CAP_IPC_LOCK: one rule (uaccess.account_locked_vm), three paths.

The kernel's rule, on both of its paths: pinned pages are charged to the mapping
process and a charge past RLIMIT_MEMLOCK is ENOMEM, unless the process has
CAP_IPC_LOCK. type1 still counts a capable caller's pages in ``locked_vm`` but skips the
limit (``vfio_lock_acct`` with ``dma->lock_cap``); iommufd does not count them at all
(``iopt_alloc_pages`` picks ``IOPT_PAGES_ACCOUNT_NONE``), natively and through the VFIO
compat container alike.
"""

from __future__ import annotations

import errno

import pytest

from tests.unit.helpers import caller, legacy_group
from vfiofs.abi import iommufd as I, vfio as V
from vfiofs.config import default_topology
from vfiofs.errors import KernelError
from vfiofs.iommufd.main import iommufd_fops_open
from vfiofs.machine import Machine
from vfiofs.uaccess import CAP_IPC_LOCK, FakeCaller, OurFile

MB = 1 << 20
LIMIT = 64 << 10  # RLIMIT_MEMLOCK far below the 1 MiB mapped
RW = I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE
FIXED = I.IOMMU_IOAS_MAP_FIXED_IOVA


def limited_caller(*, ipc_lock: bool) -> FakeCaller:
    c = caller(4 * MB, frozenset({CAP_IPC_LOCK}) if ipc_lock else frozenset())
    c.mm.memlock = LIMIT
    return c


def rc(fn, *args) -> int:  # type: ignore[no-untyped-def]
    try:
        return int(fn(*args))
    except KernelError as e:
        return -e.errno


def native(c: FakeCaller, *, attach_first: bool) -> tuple[int, int]:
    """IOAS_MAP of 1 MiB into an IOAS with a device attached (before or after the map,
    so the pinning happens at MAP or at ATTACH). Returns (MAP rc, ATTACH rc)."""
    m = Machine(default_topology())
    ctx = iommufd_fops_open()
    c.fds[7] = OurFile(ctx)
    df = m.tree.root.walk("dev/vfio/devices/vfio0").opener(c, 0)  # type: ignore[attr-defined]
    bind = V.VfioDeviceBindIommufd(24, 0, 7, 0, 0)
    assert df.ioctl(c, V.VFIO_DEVICE_BIND_IOMMUFD, c.alloc(bind.pack())) == 0
    arg = c.alloc(I.IommuIoasAlloc(12, 0, 0).pack())
    ctx.ioctl(c, I.IOMMU_IOAS_ALLOC, arg)
    ioas = I.IommuIoasAlloc.unpack_from(c.mm.read(arg, 12)).out_ioas_id
    attach = V.VfioDeviceAttachIommufdPt(16, 0, ioas, 0)

    def do_attach() -> int:
        return rc(df.ioctl, c, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, c.alloc(attach.pack()))

    attached = do_attach() if attach_first else 0
    mp = I.IommuIoasMap(40, FIXED | RW, ioas, 0, c.mm.base, MB, 0x100000)
    mapped = rc(ctx.ioctl, c, I.IOMMU_IOAS_MAP, c.alloc(mp.pack()))
    if not attach_first:
        attached = do_attach()
    return mapped, attached


def compat(c: FakeCaller) -> int:
    """MAP_DMA of 1 MiB through /dev/iommu used as a VFIO container."""
    ctx = iommufd_fops_open()
    gf = legacy_group(Machine(default_topology()), c, ctx)
    gf.get_device_fd(c, "0000:00:04.0")  # attaches the compat IOAS: pinning from now on
    mp = V.VfioIommuType1DmaMap(32, 3, c.mm.base, 0x100000, MB)
    return rc(ctx.ioctl, c, V.VFIO_IOMMU_MAP_DMA, c.alloc(mp.pack()))


def type1(c: FakeCaller) -> int:
    m = Machine(default_topology())
    cont = m.core.open_container(c, 0)
    legacy_group(m, c, cont)
    mp = V.VfioIommuType1DmaMap(32, 3, c.mm.base, 0x100000, MB)
    return rc(cont.ioctl, c, V.VFIO_IOMMU_MAP_DMA, c.alloc(mp.pack()))


@pytest.mark.parametrize("attach_first", [True, False])
def test_iommufd_native_charges_callers_without_cap_ipc_lock(
    attach_first: bool,
) -> None:
    c = limited_caller(ipc_lock=False)
    mapped, attached = native(c, attach_first=attach_first)
    if attach_first:
        assert (mapped, attached) == (-errno.ENOMEM, 0)
    else:  # nothing is pinned until a domain comes: then the attach fails
        assert (mapped, attached) == (0, -errno.ENOMEM)
    assert c.mm.locked_vm == 0


@pytest.mark.parametrize("attach_first", [True, False])
def test_iommufd_native_does_not_charge_cap_ipc_lock(attach_first: bool) -> None:
    c = limited_caller(ipc_lock=True)
    assert native(c, attach_first=attach_first) == (0, 0)
    assert c.mm.locked_vm == 0  # IOPT_PAGES_ACCOUNT_NONE: not even counted


def test_iommufd_compat_map_dma_follows_the_same_rule() -> None:
    c = limited_caller(ipc_lock=False)
    assert compat(c) == -errno.ENOMEM
    c = limited_caller(ipc_lock=True)
    assert compat(c) == 0
    assert c.mm.locked_vm == 0


def test_type1_counts_cap_ipc_lock_callers_but_skips_the_limit() -> None:
    c = limited_caller(ipc_lock=False)
    assert type1(c) == -errno.ENOMEM
    assert c.mm.locked_vm == 0
    c = limited_caller(ipc_lock=True)
    assert type1(c) == 0
    assert c.mm.locked_vm == MB  # vfio_lock_acct() charges, bypassing the rlimit
