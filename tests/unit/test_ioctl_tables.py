"""Invariants of every `IoctlTable` in vfiofs (found by walking the package, so a new
table is checked without being listed here).

- no duplicate commands or names, entries sorted by name word by word (as main.c
  keeps IOMMU_HW_QUEUE_ALLOC before IOMMU_HWPT_ALLOC);
- ``cmd`` is the uapi ``_IO(...)`` constant of that name (itself checked against the
  Linux header by tests/unit/abi);
- ``min_size`` is ``offsetofend(struct, last)`` with the kernel's own ``last`` field
  (the ``minsz`` of drivers/vfio, the ``IOCTL_OP`` table of drivers/iommu/iommufd);
- every handler is reachable: the generic argument checks pass a well-formed argument
  through to it, and no command of a backend table is answered first by the table in
  front of it (container before type1, iommufd before its VFIO compat table).
"""

from __future__ import annotations

import errno
import importlib
import pkgutil
from typing import Any

import attrs
import pytest

import vfiofs
import vfiofs.machine  # the core imports in one order only, for now (issue 11)
from vfiofs.abi import iommufd as I, iommufd_test as T, vfio as V
from vfiofs.abi.ioctl import _IOC_DIR, _IOC_NONE, _IOC_SIZE, _IOC_TYPE
from vfiofs.errors import KernelError
from vfiofs.ioctl_table import ArgKind, IoctlOp, IoctlTable, Ucmd
from vfiofs.uaccess import FakeCaller


def find_tables() -> dict[str, IoctlTable[Any]]:
    tables = {}
    for info in pkgutil.walk_packages(vfiofs.__path__, "vfiofs."):
        if info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        for name, value in vars(mod).items():
            if isinstance(value, IoctlTable):
                tables[f"{info.name}.{name}"] = value
    return tables


TABLES = find_tables()
OPS = [(t, op) for t, table in TABLES.items() for op in table.ops.values()]

# The kernel's last field of the minimum struct, per command: ``minsz =
# offsetofend(struct ..., <last>)`` in drivers/vfio (group.c, vfio_main.c, device_cdev.c,
# vfio_iommu_type1.c, pci/vfio_pci_core.c, iommufd/vfio_compat.c) and the IOCTL_OP table
# of drivers/iommu/iommufd/main.c (where ``__reserved`` is our ``reserved``).
KERNEL_LAST = {
    "VFIO_GROUP_GET_STATUS": "flags",
    "VFIO_DEVICE_GET_INFO": "num_irqs",
    "VFIO_DEVICE_GET_REGION_INFO": "offset",
    "VFIO_DEVICE_GET_IRQ_INFO": "count",
    "VFIO_DEVICE_SET_IRQS": "count",
    "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO": "count",
    "VFIO_DEVICE_PCI_HOT_RESET": "count",
    "VFIO_DEVICE_FEATURE": "flags",
    "VFIO_DEVICE_BIND_IOMMUFD": "out_devid",
    "VFIO_DEVICE_ATTACH_IOMMUFD_PT": "pt_id",
    "VFIO_DEVICE_DETACH_IOMMUFD_PT": "flags",
    "VFIO_IOMMU_GET_INFO": "iova_pgsizes",
    "VFIO_IOMMU_MAP_DMA": "size",
    "VFIO_IOMMU_UNMAP_DMA": "size",
    "VFIO_IOMMU_DIRTY_PAGES": "flags",
    "IOMMU_DESTROY": "id",
    "IOMMU_FAULT_QUEUE_ALLOC": "out_fault_fd",
    "IOMMU_GET_HW_INFO": "reserved",
    "IOMMU_HW_QUEUE_ALLOC": "length",
    "IOMMU_HWPT_ALLOC": "reserved",
    "IOMMU_HWPT_GET_DIRTY_BITMAP": "data",
    "IOMMU_HWPT_INVALIDATE": "reserved",
    "IOMMU_HWPT_SET_DIRTY_TRACKING": "reserved",
    "IOMMU_IOAS_ALLOC": "out_ioas_id",
    "IOMMU_IOAS_ALLOW_IOVAS": "allowed_iovas",
    "IOMMU_IOAS_CHANGE_PROCESS": "reserved",
    "IOMMU_IOAS_COPY": "src_iova",
    "IOMMU_IOAS_IOVA_RANGES": "out_iova_alignment",
    "IOMMU_IOAS_MAP": "iova",
    "IOMMU_IOAS_MAP_FILE": "iova",
    "IOMMU_IOAS_UNMAP": "length",
    "IOMMU_OPTION": "val64",
    "IOMMU_VDEVICE_ALLOC": "virt_id",
    "IOMMU_VEVENTQ_ALLOC": "out_veventq_fd",
    "IOMMU_VFIO_IOAS": "reserved",
    "IOMMU_VIOMMU_ALLOC": "out_viommu_id",
    # under CONFIG_IOMMUFD_TEST (drivers/iommu/iommufd/iommufd_test.h)
    "IOMMU_TEST_CMD": "last",
}

# (front, backend): commands the front table does not know go to the backend
CHAINS = [
    ("vfiofs.vfio.container.IOCTLS", "vfiofs.vfio.vfio_iommu_type1.IOCTLS"),
    ("vfiofs.iommufd.main.IOCTLS", "vfiofs.iommufd.vfio_compat.COMPAT_IOCTLS"),
]


def op_id(item: tuple[str, IoctlOp[Any]]) -> str:
    return f"{item[0].rsplit('.', 2)[-2]}:{item[1].name}"


def test_tables_are_found() -> None:
    assert len(TABLES) >= 6
    for front, back in CHAINS:
        assert front in TABLES and back in TABLES


def test_table_rejects_a_duplicate_command() -> None:
    op = IoctlOp(V.VFIO_GET_API_VERSION, "VFIO_GET_API_VERSION", lambda o, u: 0)
    with pytest.raises(ValueError, match="duplicate"):
        IoctlTable([op, attrs.evolve(op, name="AGAIN")])


@pytest.mark.parametrize("name", list(TABLES))
def test_table_has_no_duplicates_and_is_sorted_by_name(name: str) -> None:
    table = TABLES[name]
    names = [op.name for op in table.ops.values()]
    assert all(cmd == op.cmd for cmd, op in table.ops.items())
    assert len(set(names)) == len(names)
    assert names == sorted(names, key=lambda n: n.split("_"))


@pytest.mark.parametrize(("table", "op"), OPS, ids=[op_id(x) for x in OPS])
def test_cmd_is_the_uapi_io_definition(table: str, op: IoctlOp[Any]) -> None:
    abi = next(m for m in (I, T, V) if hasattr(m, op.name))
    assert getattr(abi, op.name) == op.cmd
    # vfio and iommufd ioctls are all _IO(';', nr): no size, no direction
    assert (_IOC_TYPE(op.cmd), _IOC_DIR(op.cmd), _IOC_SIZE(op.cmd)) == (
        ord(";"),
        _IOC_NONE,
        0,
    )


@pytest.mark.parametrize(("table", "op"), OPS, ids=[op_id(x) for x in OPS])
def test_min_size_is_offsetofend_of_the_kernels_last_field(
    table: str, op: IoctlOp[Any]
) -> None:
    if op.kind in (ArgKind.ARGSZ, ArgKind.SIZE):
        assert op.struct is not None and op.last is not None
        # SIZE ops are iommufd's `size`-led structs, plus VFIO_DEVICE_BIND_IOMMUFD: an
        # `argsz`-led vfio struct that the kernel reads with copy_struct_from_user
        # (drivers/vfio/device_cdev.c, since the VF token was added)
        leading = ("argsz",) if op.kind is ArgKind.ARGSZ else ("size", "argsz")
        assert op.struct.FIELDS[0] in leading
        assert op.last == KERNEL_LAST[op.name]
        assert op.last in op.struct.FIELDS
        assert op.min_size == op.struct.offsetofend(op.last) <= op.struct.SIZE
    else:
        assert (op.struct, op.last, op.min_size) == (None, None, 0)


@pytest.mark.parametrize(("table", "op"), OPS, ids=[op_id(x) for x in OPS])
def test_handler_is_reached_with_a_well_formed_argument(
    table: str, op: IoctlOp[Any]
) -> None:
    """The generic checks (copy min_size, argsz/size, copy_struct_from_user) let a
    correct argument through: argsz = the full struct, or exactly min_size."""
    seen: list[Ucmd] = []

    def handler(obj: object, ucmd: Ucmd) -> int:
        seen.append(ucmd)
        return 7

    probe = attrs.evolve(op, handler=handler)
    caller = FakeCaller()
    arg = caller.mm.base + 0x100
    sizes = [op.struct.SIZE, op.min_size] if op.struct is not None else [0]
    for size in sizes:
        caller.copy_to_user(arg, bytes(64))
        caller.copy_to_user(arg, size.to_bytes(4, "little"))
        assert IoctlTable([probe]).dispatch(object(), caller, op.cmd, arg) == 7
        ucmd = seen.pop()
        assert ucmd.arg == arg
        if op.struct is not None:
            assert ucmd.argsz == size
            assert ucmd.cmd == op.struct.unpack_from(
                size.to_bytes(4, "little") + bytes(op.struct.SIZE - 4)
            )
        else:
            assert ucmd.cmd is None


@pytest.mark.parametrize(("table", "op"), OPS, ids=[op_id(x) for x in OPS])
def test_argument_below_min_size_is_einval(table: str, op: IoctlOp[Any]) -> None:
    if op.struct is None:
        return
    caller = FakeCaller()
    arg = caller.mm.base + 0x100
    caller.copy_to_user(arg, (op.min_size - 1).to_bytes(4, "little"))
    with pytest.raises(KernelError) as e:
        IoctlTable([attrs.evolve(op, handler=lambda o, u: 0)]).dispatch(
            object(), caller, op.cmd, arg
        )
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize(("front", "back"), CHAINS)
def test_no_backend_command_is_shadowed(front: str, back: str) -> None:
    shadowed = TABLES[front].ops.keys() & TABLES[back].ops.keys()
    assert not shadowed, [TABLES[back].ops[c].name for c in shadowed]
