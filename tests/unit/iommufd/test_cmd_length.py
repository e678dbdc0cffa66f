"""cmd_length for all 21 iommufd ioctls and IOMMU_TEST_CMD: the size field below the
struct's minimum (offsetofend of its last required field) is EINVAL, a longer struct
with a non-zero tail is E2BIG, and a longer one with a zero tail passes the size checks
(main.c: iommufd_fops_ioctl + copy_struct_from_user)."""

from __future__ import annotations

import errno

import pytest

from vfiofs.abi import iommufd as I, iommufd_test as T
from vfiofs.ioctl_table import IoctlOp
from vfiofs.iommufd.main import IOCTLS, TEST_IOCTLS

from .conftest import Env

OPS = [*IOCTLS.ops.values(), *TEST_IOCTLS.ops.values()]
# main.c's IOCTL_OP table, in its order (sorted by name); the last fields are checked
# against KERNEL_LAST by tests/unit/test_ioctl_tables.py
KERNEL_ORDER = [
    I.IOMMU_DESTROY,
    I.IOMMU_FAULT_QUEUE_ALLOC,
    I.IOMMU_GET_HW_INFO,
    I.IOMMU_HW_QUEUE_ALLOC,
    I.IOMMU_HWPT_ALLOC,
    I.IOMMU_HWPT_GET_DIRTY_BITMAP,
    I.IOMMU_HWPT_INVALIDATE,
    I.IOMMU_HWPT_SET_DIRTY_TRACKING,
    I.IOMMU_IOAS_ALLOC,
    I.IOMMU_IOAS_ALLOW_IOVAS,
    I.IOMMU_IOAS_CHANGE_PROCESS,
    I.IOMMU_IOAS_COPY,
    I.IOMMU_IOAS_IOVA_RANGES,
    I.IOMMU_IOAS_MAP,
    I.IOMMU_IOAS_MAP_FILE,
    I.IOMMU_IOAS_UNMAP,
    I.IOMMU_OPTION,
    I.IOMMU_VDEVICE_ALLOC,
    I.IOMMU_VEVENTQ_ALLOC,
    I.IOMMU_VFIO_IOAS,
    I.IOMMU_VIOMMU_ALLOC,
]


def test_the_table_is_the_kernels() -> None:
    """All 21 iommufd ioctls, numbered 0x80..0x94, and the test command at 0xa0."""
    assert list(IOCTLS.ops) == KERNEL_ORDER
    assert sorted(op.cmd & 0xFF for op in IOCTLS.ops.values()) == list(
        range(0x80, 0x95)
    )
    (test_op,) = TEST_IOCTLS.ops.values()
    assert test_op.cmd & 0xFF == 0x80 + 32
    assert test_op.min_size == T.LAST_OFFSET + 4 == 68
    assert T.IommuTestCmd.SIZE == 72


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_short_is_einval(env: Env, op: IoctlOp[object]) -> None:
    assert op.struct is not None
    for size in (0, 4, op.min_size - 1):
        arg = env.c.alloc(size.to_bytes(4, "little") + bytes(op.struct.SIZE + 16))
        with pytest.raises(Exception) as e:
            env.ctx.ioctl(env.c, op.cmd, arg)
        assert getattr(e.value, "errno", None) == errno.EINVAL, size


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_nonzero_tail_is_e2big_zero_tail_passes(env: Env, op: IoctlOp[object]) -> None:
    assert op.struct is not None
    size = op.struct.SIZE + 8
    raw = bytearray(size.to_bytes(4, "little") + bytes(size - 4))
    raw[-1] = 1
    arg = env.c.alloc(bytes(raw))
    with pytest.raises(Exception) as e:
        env.ctx.ioctl(env.c, op.cmd, arg)
    assert getattr(e.value, "errno", None) == errno.E2BIG
    # all zero past the known struct: the size checks pass; what the handler says
    # about the all-zero command is its own business, but not EINVAL-for-size / E2BIG
    raw[-1] = 0
    arg = env.c.alloc(bytes(raw))
    try:
        env.ctx.ioctl(env.c, op.cmd, arg)
    except Exception as e:  # noqa: BLE001  # any errno of the handler is fine here
        assert getattr(e, "errno", None) not in (errno.E2BIG, None), op.name
        assert env.c.mm.read(arg + op.struct.SIZE, 8) == bytes(
            8
        )  # nothing written past
