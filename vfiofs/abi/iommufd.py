"""include/uapi/linux/iommufd.h (Linux 7.2, to IOMMUFD_CMD_HW_QUEUE_ALLOC): ioctl numbers,
the structs vfiofs serves, and constants. Every struct starts with ``u32 size``."""

from __future__ import annotations

from typing import Final

from ._cstruct import CStruct, cstruct, pad, s32, u8, u16, u32, u64
from .ioctl import _IO

IOMMUFD_TYPE: Final = ord(";")
IOMMUFD_CMD_BASE: Final = 0x80


def _cmd(n: int) -> int:
    return _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + n)


IOMMU_DESTROY: Final = _cmd(0)
IOMMU_IOAS_ALLOC: Final = _cmd(1)
IOMMU_IOAS_ALLOW_IOVAS: Final = _cmd(2)
IOMMU_IOAS_COPY: Final = _cmd(3)
IOMMU_IOAS_IOVA_RANGES: Final = _cmd(4)
IOMMU_IOAS_MAP: Final = _cmd(5)
IOMMU_IOAS_UNMAP: Final = _cmd(6)
IOMMU_OPTION: Final = _cmd(7)
IOMMU_VFIO_IOAS: Final = _cmd(8)
IOMMU_HWPT_ALLOC: Final = _cmd(9)
IOMMU_GET_HW_INFO: Final = _cmd(10)
IOMMU_HWPT_SET_DIRTY_TRACKING: Final = _cmd(11)
IOMMU_HWPT_GET_DIRTY_BITMAP: Final = _cmd(12)
IOMMU_HWPT_INVALIDATE: Final = _cmd(13)
IOMMU_FAULT_QUEUE_ALLOC: Final = _cmd(14)
IOMMU_IOAS_MAP_FILE: Final = _cmd(15)
IOMMU_VIOMMU_ALLOC: Final = _cmd(16)
IOMMU_VDEVICE_ALLOC: Final = _cmd(17)
IOMMU_IOAS_CHANGE_PROCESS: Final = _cmd(18)
IOMMU_VEVENTQ_ALLOC: Final = _cmd(19)
IOMMU_HW_QUEUE_ALLOC: Final = _cmd(20)


@cstruct
class IommuDestroy(CStruct):
    size: int = u32()
    id: int = u32()


@cstruct
class IommuIoasAlloc(CStruct):
    size: int = u32()
    flags: int = u32()
    out_ioas_id: int = u32()


@cstruct
class IommuIovaRange(CStruct):
    start: int = u64()
    last: int = u64()


@cstruct
class IommuIoasIovaRanges(CStruct):
    size: int = u32()
    ioas_id: int = u32()
    num_iovas: int = u32()
    reserved: int = u32()
    allowed_iovas: int = u64()
    out_iova_alignment: int = u64()


@cstruct
class IommuIoasAllowIovas(CStruct):
    size: int = u32()
    ioas_id: int = u32()
    num_iovas: int = u32()
    reserved: int = u32()
    allowed_iovas: int = u64()


IOMMU_IOAS_MAP_FIXED_IOVA: Final = 1 << 0
IOMMU_IOAS_MAP_WRITEABLE: Final = 1 << 1
IOMMU_IOAS_MAP_READABLE: Final = 1 << 2


@cstruct
class IommuIoasMap(CStruct):
    size: int = u32()
    flags: int = u32()
    ioas_id: int = u32()
    reserved: int = u32()
    user_va: int = u64()
    length: int = u64()
    iova: int = u64()


@cstruct
class IommuIoasMapFile(CStruct):
    size: int = u32()
    flags: int = u32()
    ioas_id: int = u32()
    fd: int = s32()
    start: int = u64()
    length: int = u64()
    iova: int = u64()


@cstruct
class IommuIoasCopy(CStruct):
    size: int = u32()
    flags: int = u32()
    dst_ioas_id: int = u32()
    src_ioas_id: int = u32()
    length: int = u64()
    dst_iova: int = u64()
    src_iova: int = u64()


@cstruct
class IommuIoasUnmap(CStruct):
    size: int = u32()
    ioas_id: int = u32()
    iova: int = u64()
    length: int = u64()


IOMMU_OPTION_RLIMIT_MODE: Final = 0
IOMMU_OPTION_HUGE_PAGES: Final = 1
IOMMU_OPTION_OP_SET: Final = 0
IOMMU_OPTION_OP_GET: Final = 1


@cstruct
class IommuOption(CStruct):
    size: int = u32()
    option_id: int = u32()
    op: int = u16()
    reserved: int = u16()
    object_id: int = u32()
    val64: int = u64()


IOMMU_VFIO_IOAS_GET: Final = 0
IOMMU_VFIO_IOAS_SET: Final = 1
IOMMU_VFIO_IOAS_CLEAR: Final = 2


@cstruct
class IommuVfioIoas(CStruct):
    size: int = u32()
    ioas_id: int = u32()
    op: int = u16()
    reserved: int = u16()


IOMMU_HWPT_ALLOC_NEST_PARENT: Final = 1 << 0
IOMMU_HWPT_ALLOC_DIRTY_TRACKING: Final = 1 << 1
IOMMU_HWPT_FAULT_ID_VALID: Final = 1 << 2
IOMMU_HWPT_ALLOC_PASID: Final = 1 << 3
IOMMU_HWPT_DATA_NONE: Final = 0
IOMMU_HWPT_DATA_VTD_S1: Final = 1
IOMMU_HWPT_DATA_ARM_SMMUV3: Final = 2


@cstruct
class IommuHwptAlloc(CStruct):
    size: int = u32()
    flags: int = u32()
    dev_id: int = u32()
    pt_id: int = u32()
    out_hwpt_id: int = u32()
    reserved: int = u32()
    data_type: int = u32()
    data_len: int = u32()
    data_uptr: int = u64()
    fault_id: int = u32()
    reserved2: int = u32()


IOMMU_HW_INFO_TYPE_NONE: Final = 0
IOMMU_HW_INFO_TYPE_DEFAULT: Final = 0
IOMMU_HW_INFO_TYPE_INTEL_VTD: Final = 1
IOMMU_HW_INFO_TYPE_ARM_SMMUV3: Final = 2
IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV: Final = 3
IOMMU_HW_INFO_FLAG_INPUT_TYPE: Final = 1 << 0
IOMMU_HW_CAP_DIRTY_TRACKING: Final = 1 << 0
IOMMU_HW_CAP_PCI_PASID_EXEC: Final = 1 << 1
IOMMU_HW_CAP_PCI_PASID_PRIV: Final = 1 << 2


@cstruct
class IommuHwInfo(CStruct):
    size: int = u32()
    flags: int = u32()
    dev_id: int = u32()
    data_len: int = u32()
    data_uptr: int = u64()
    out_data_type: int = u32()  # union with in_data_type (FLAG_INPUT_TYPE)
    out_max_pasid_log2: int = u8()
    reserved: bytes = pad(3)
    out_capabilities: int = u64()


IOMMU_HWPT_DIRTY_TRACKING_ENABLE: Final = 1


@cstruct
class IommuHwptSetDirtyTracking(CStruct):
    size: int = u32()
    flags: int = u32()
    hwpt_id: int = u32()
    reserved: int = u32()


IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR: Final = 1


@cstruct
class IommuHwptGetDirtyBitmap(CStruct):
    size: int = u32()
    hwpt_id: int = u32()
    flags: int = u32()
    reserved: int = u32()
    iova: int = u64()
    length: int = u64()
    page_size: int = u64()
    data: int = u64()


IOMMU_HWPT_INVALIDATE_DATA_VTD_S1: Final = 0
IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3: Final = 1


@cstruct
class IommuHwptInvalidate(CStruct):
    size: int = u32()
    hwpt_id: int = u32()
    data_uptr: int = u64()
    data_type: int = u32()
    entry_len: int = u32()
    entry_num: int = u32()
    reserved: int = u32()


IOMMU_PGFAULT_FLAGS_PASID_VALID: Final = 1 << 0
IOMMU_PGFAULT_FLAGS_LAST_PAGE: Final = 1 << 1
IOMMU_PGFAULT_PERM_READ: Final = 1 << 0
IOMMU_PGFAULT_PERM_WRITE: Final = 1 << 1
IOMMU_PGFAULT_PERM_EXEC: Final = 1 << 2
IOMMU_PGFAULT_PERM_PRIV: Final = 1 << 3


@cstruct
class IommuHwptPgfault(CStruct):
    flags: int = u32()
    dev_id: int = u32()
    pasid: int = u32()
    grpid: int = u32()
    perm: int = u32()
    reserved: int = u32()
    addr: int = u64()
    length: int = u32()
    cookie: int = u32()


IOMMUFD_PAGE_RESP_SUCCESS: Final = 0
IOMMUFD_PAGE_RESP_INVALID: Final = 1


@cstruct
class IommuHwptPageResponse(CStruct):
    cookie: int = u32()
    code: int = u32()


@cstruct
class IommuFaultAlloc(CStruct):
    size: int = u32()
    flags: int = u32()
    out_fault_id: int = u32()
    out_fault_fd: int = u32()


IOMMU_VIOMMU_TYPE_DEFAULT: Final = 0
IOMMU_VIOMMU_TYPE_ARM_SMMUV3: Final = 1
IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV: Final = 2


@cstruct
class IommuViommuAlloc(CStruct):
    size: int = u32()
    flags: int = u32()
    type: int = u32()
    dev_id: int = u32()
    hwpt_id: int = u32()
    out_viommu_id: int = u32()
    data_len: int = u32()
    reserved: int = u32()
    data_uptr: int = u64()


@cstruct
class IommuVdeviceAlloc(CStruct):
    size: int = u32()
    viommu_id: int = u32()
    dev_id: int = u32()
    out_vdevice_id: int = u32()
    virt_id: int = u64()


@cstruct
class IommuIoasChangeProcess(CStruct):
    size: int = u32()
    reserved: int = u32()


IOMMU_VEVENTQ_FLAG_LOST_EVENTS: Final = 1 << 0


@cstruct
class IommufdVeventHeader(CStruct):
    flags: int = u32()
    sequence: int = u32()


IOMMU_VEVENTQ_TYPE_DEFAULT: Final = 0
IOMMU_VEVENTQ_TYPE_ARM_SMMUV3: Final = 1
IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV: Final = 2


@cstruct
class IommuVeventqAlloc(CStruct):
    size: int = u32()
    flags: int = u32()
    viommu_id: int = u32()
    type: int = u32()
    veventq_depth: int = u32()
    out_veventq_id: int = u32()
    out_veventq_fd: int = u32()
    reserved: int = u32()


IOMMU_HW_QUEUE_TYPE_DEFAULT: Final = 0
IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV: Final = 1


@cstruct
class IommuHwQueueAlloc(CStruct):
    size: int = u32()
    flags: int = u32()
    viommu_id: int = u32()
    type: int = u32()
    index: int = u32()
    out_hw_queue_id: int = u32()
    nesting_parent_iova: int = u64()
    length: int = u64()
