"""include/uapi/linux/vfio.h (v6.17-v6.19 window): ioctl numbers, structs and constants.

Every ioctl is ``_IO(VFIO_TYPE, VFIO_BASE + n)``: no size, no direction. Numbers 112-121
mean different things on a container fd and on a device fd; both names are defined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ._cstruct import CStruct, cstruct, pad, s32, u8, u16, u32, u64
from .ioctl import _IO

VFIO_API_VERSION: Final = 0
VFIO_TYPE: Final = ord(";")
VFIO_BASE: Final = 100


def _vfio(n: int) -> int:
    return _IO(VFIO_TYPE, VFIO_BASE + n)


# extensions (CHECK_EXTENSION / SET_IOMMU)
VFIO_TYPE1_IOMMU: Final = 1
VFIO_SPAPR_TCE_IOMMU: Final = 2
VFIO_TYPE1v2_IOMMU: Final = 3
VFIO_DMA_CC_IOMMU: Final = 4
VFIO_EEH: Final = 5
VFIO_TYPE1_NESTING_IOMMU: Final = (
    6  # __VFIO_RESERVED_TYPE1_NESTING_IOMMU in new headers
)
VFIO_SPAPR_TCE_v2_IOMMU: Final = 7
VFIO_NOIOMMU_IOMMU: Final = 8
VFIO_UNMAP_ALL: Final = 9
VFIO_UPDATE_VADDR: Final = 10

VFIO_GET_API_VERSION: Final = _vfio(0)
VFIO_CHECK_EXTENSION: Final = _vfio(1)
VFIO_SET_IOMMU: Final = _vfio(2)
VFIO_GROUP_GET_STATUS: Final = _vfio(3)
VFIO_GROUP_SET_CONTAINER: Final = _vfio(4)
VFIO_GROUP_UNSET_CONTAINER: Final = _vfio(5)
VFIO_GROUP_GET_DEVICE_FD: Final = _vfio(6)
VFIO_DEVICE_GET_INFO: Final = _vfio(7)
VFIO_DEVICE_GET_REGION_INFO: Final = _vfio(8)
VFIO_DEVICE_GET_IRQ_INFO: Final = _vfio(9)
VFIO_DEVICE_SET_IRQS: Final = _vfio(10)
VFIO_DEVICE_RESET: Final = _vfio(11)
VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: Final = _vfio(12)
VFIO_IOMMU_GET_INFO: Final = _vfio(12)
VFIO_DEVICE_PCI_HOT_RESET: Final = _vfio(13)
VFIO_IOMMU_MAP_DMA: Final = _vfio(13)
VFIO_DEVICE_QUERY_GFX_PLANE: Final = _vfio(14)
VFIO_IOMMU_UNMAP_DMA: Final = _vfio(14)
VFIO_DEVICE_GET_GFX_DMABUF: Final = _vfio(15)
VFIO_IOMMU_ENABLE: Final = _vfio(15)
VFIO_DEVICE_IOEVENTFD: Final = _vfio(16)
VFIO_IOMMU_DISABLE: Final = _vfio(16)
VFIO_DEVICE_FEATURE: Final = _vfio(17)
VFIO_IOMMU_DIRTY_PAGES: Final = _vfio(17)
VFIO_DEVICE_BIND_IOMMUFD: Final = _vfio(18)
VFIO_DEVICE_ATTACH_IOMMUFD_PT: Final = _vfio(19)
VFIO_DEVICE_DETACH_IOMMUFD_PT: Final = _vfio(20)
VFIO_MIG_GET_PRECOPY_INFO: Final = _vfio(21)


@cstruct
class VfioInfoCapHeader(CStruct):
    id: int = u16()
    version: int = u16()
    next: int = u32()


@cstruct
class VfioGroupStatus(CStruct):
    argsz: int = u32()
    flags: int = u32()


VFIO_GROUP_FLAGS_VIABLE: Final = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET: Final = 1 << 1


@cstruct
class VfioDeviceInfo(CStruct):
    argsz: int = u32()
    flags: int = u32()
    num_regions: int = u32()
    num_irqs: int = u32()
    cap_offset: int = u32()
    pad: int = u32()


VFIO_DEVICE_FLAGS_RESET: Final = 1 << 0
VFIO_DEVICE_FLAGS_PCI: Final = 1 << 1
VFIO_DEVICE_FLAGS_CAPS: Final = 1 << 7


@cstruct
class VfioRegionInfo(CStruct):
    argsz: int = u32()
    flags: int = u32()
    index: int = u32()
    cap_offset: int = u32()
    size: int = u64()
    offset: int = u64()


VFIO_REGION_INFO_FLAG_READ: Final = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE: Final = 1 << 1
VFIO_REGION_INFO_FLAG_MMAP: Final = 1 << 2
VFIO_REGION_INFO_FLAG_CAPS: Final = 1 << 3


@cstruct
class VfioIrqInfo(CStruct):
    argsz: int = u32()
    flags: int = u32()
    index: int = u32()
    count: int = u32()


VFIO_IRQ_INFO_EVENTFD: Final = 1 << 0
VFIO_IRQ_INFO_MASKABLE: Final = 1 << 1
VFIO_IRQ_INFO_AUTOMASKED: Final = 1 << 2
VFIO_IRQ_INFO_NORESIZE: Final = 1 << 3


@cstruct
class VfioIrqSet(CStruct):
    argsz: int = u32()
    flags: int = u32()
    index: int = u32()
    start: int = u32()
    count: int = u32()


VFIO_IRQ_SET_DATA_NONE: Final = 1 << 0
VFIO_IRQ_SET_DATA_BOOL: Final = 1 << 1
VFIO_IRQ_SET_DATA_EVENTFD: Final = 1 << 2
VFIO_IRQ_SET_ACTION_MASK: Final = 1 << 3
VFIO_IRQ_SET_ACTION_UNMASK: Final = 1 << 4
VFIO_IRQ_SET_ACTION_TRIGGER: Final = 1 << 5
VFIO_IRQ_SET_DATA_TYPE_MASK: Final = 0x7
VFIO_IRQ_SET_ACTION_TYPE_MASK: Final = 0x38

VFIO_PCI_BAR0_REGION_INDEX: Final = 0
VFIO_PCI_BAR5_REGION_INDEX: Final = 5
VFIO_PCI_ROM_REGION_INDEX: Final = 6
VFIO_PCI_CONFIG_REGION_INDEX: Final = 7
VFIO_PCI_VGA_REGION_INDEX: Final = 8
VFIO_PCI_NUM_REGIONS: Final = 9

VFIO_PCI_INTX_IRQ_INDEX: Final = 0
VFIO_PCI_MSI_IRQ_INDEX: Final = 1
VFIO_PCI_MSIX_IRQ_INDEX: Final = 2
VFIO_PCI_ERR_IRQ_INDEX: Final = 3
VFIO_PCI_REQ_IRQ_INDEX: Final = 4
VFIO_PCI_NUM_IRQS: Final = 5

VFIO_PCI_OFFSET_SHIFT: Final = 40


def VFIO_PCI_INDEX_TO_OFFSET(index: int) -> int:
    return index << VFIO_PCI_OFFSET_SHIFT


def VFIO_PCI_OFFSET_TO_INDEX(off: int) -> int:
    return off >> VFIO_PCI_OFFSET_SHIFT


VFIO_PCI_OFFSET_MASK: Final = (1 << VFIO_PCI_OFFSET_SHIFT) - 1


@cstruct
class VfioPciHotResetInfo(CStruct):
    argsz: int = u32()
    flags: int = u32()
    count: int = u32()


@cstruct
class VfioPciDependentDevice(CStruct):
    group_id: int = u32()  # or devid
    segment: int = u16()
    bus: int = u8()
    devfn: int = u8()


@cstruct
class VfioPciHotReset(CStruct):
    argsz: int = u32()
    flags: int = u32()
    count: int = u32()


@cstruct
class VfioDeviceFeature(CStruct):
    argsz: int = u32()
    flags: int = u32()


VFIO_DEVICE_FEATURE_MASK: Final = 0xFFFF
VFIO_DEVICE_FEATURE_GET: Final = 1 << 16
VFIO_DEVICE_FEATURE_SET: Final = 1 << 17
VFIO_DEVICE_FEATURE_PROBE: Final = 1 << 18


@cstruct
class VfioDeviceBindIommufd(CStruct):
    argsz: int = u32()
    flags: int = u32()
    iommufd: int = s32()
    out_devid: int = u32()
    token_uuid_ptr: int = u64()


VFIO_DEVICE_BIND_FLAG_TOKEN: Final = 1 << 0


@cstruct
class VfioDeviceAttachIommufdPt(CStruct):
    argsz: int = u32()
    flags: int = u32()
    pt_id: int = u32()
    pasid: int = u32()


@cstruct
class VfioDeviceDetachIommufdPt(CStruct):
    argsz: int = u32()
    flags: int = u32()
    pasid: int = u32()


VFIO_DEVICE_ATTACH_PASID: Final = 1 << 0


@cstruct
class VfioIommuType1Info(CStruct):
    argsz: int = u32()
    flags: int = u32()
    iova_pgsizes: int = u64()
    cap_offset: int = u32()
    pad: int = u32()


VFIO_IOMMU_INFO_PGSIZES: Final = 1 << 0
VFIO_IOMMU_INFO_CAPS: Final = 1 << 1
VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: Final = 1
VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION: Final = 2
VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: Final = 3


@cstruct
class VfioIommuType1InfoCapIovaRange(CStruct):
    id: int = u16(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE)
    version: int = u16(1)
    next: int = u32()
    nr_iovas: int = u32()
    reserved: int = u32()


@cstruct
class VfioIovaRange(CStruct):
    start: int = u64()
    end: int = u64()


def vfio_iova_range_cap(ranges: Sequence[tuple[int, int]]) -> bytes:
    """``struct vfio_iommu_type1_info_cap_iova_range`` with its ``iova_ranges[]``."""
    head = VfioIommuType1InfoCapIovaRange(nr_iovas=len(ranges)).pack()
    return head + b"".join(VfioIovaRange(lo, hi).pack() for lo, hi in ranges)


@cstruct
class VfioIommuType1InfoCapMigration(CStruct):
    id: int = u16(VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION)
    version: int = u16(1)
    next: int = u32()
    flags: int = u32()
    pad: int = u32()
    pgsize_bitmap: int = u64()
    max_dirty_bitmap_size: int = u64()


@cstruct
class VfioIommuType1InfoDmaAvail(CStruct):
    id: int = u16(VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL)
    version: int = u16(1)
    next: int = u32()
    avail: int = u32()


@cstruct
class VfioIommuType1DmaMap(CStruct):
    argsz: int = u32()
    flags: int = u32()
    vaddr: int = u64()
    iova: int = u64()
    size: int = u64()


VFIO_DMA_MAP_FLAG_READ: Final = 1 << 0
VFIO_DMA_MAP_FLAG_WRITE: Final = 1 << 1
VFIO_DMA_MAP_FLAG_VADDR: Final = 1 << 2


@cstruct
class VfioIommuType1DmaUnmap(CStruct):
    argsz: int = u32()
    flags: int = u32()
    iova: int = u64()
    size: int = u64()


VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: Final = 1 << 0
VFIO_DMA_UNMAP_FLAG_ALL: Final = 1 << 1
VFIO_DMA_UNMAP_FLAG_VADDR: Final = 1 << 2


@cstruct
class VfioBitmap(CStruct):
    pgsize: int = u64()
    size: int = u64()
    data: int = u64()


@cstruct
class VfioIommuType1DirtyBitmap(CStruct):
    argsz: int = u32()
    flags: int = u32()


VFIO_IOMMU_DIRTY_PAGES_FLAG_START: Final = 1 << 0
VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP: Final = 1 << 1
VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP: Final = 1 << 2


@cstruct
class VfioIommuType1DirtyBitmapGet(CStruct):
    iova: int = u64()
    size: int = u64()
    bitmap: bytes = pad(24)  # struct vfio_bitmap


@cstruct
class VfioRegionInfoCapType(CStruct):
    id: int = u16(2)
    version: int = u16(1)
    next: int = u32()
    type: int = u32()
    subtype: int = u32()
