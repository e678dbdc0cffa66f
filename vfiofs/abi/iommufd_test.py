"""drivers/iommu/iommufd/iommufd_test.h (Linux 7.2): IOMMU_TEST_CMD, the ABI of the
kernel's mock IOMMU driver (CONFIG_IOMMUFD_TEST) that tools/testing/selftests/iommu uses.

``struct iommu_test_cmd`` is a header (size, op, id, reserved), a union of per-op
argument structs and a trailing ``last``. The union is spelled here as 48 raw bytes
(``payload``) with one `@cstruct` class per member, decoded at offset 16; the union's
size is that of its largest member (``dirty``: 4 + pad 4 + 5 * 8 = 48 bytes).
"""

from __future__ import annotations

from typing import Final

from ._cstruct import CStruct, cstruct, pad, s32, u32, u64
from .ioctl import _IO
from .iommufd import IOMMUFD_CMD_BASE, IOMMUFD_TYPE

IOMMU_TEST_OP_ADD_RESERVED: Final = 1
IOMMU_TEST_OP_MOCK_DOMAIN: Final = 2
IOMMU_TEST_OP_MD_CHECK_MAP: Final = 3
IOMMU_TEST_OP_MD_CHECK_REFS: Final = 4
IOMMU_TEST_OP_CREATE_ACCESS: Final = 5
IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: Final = 6
IOMMU_TEST_OP_ACCESS_PAGES: Final = 7
IOMMU_TEST_OP_ACCESS_RW: Final = 8
IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: Final = 9
IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: Final = 10
IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: Final = 11
IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: Final = 12
IOMMU_TEST_OP_DIRTY: Final = 13
IOMMU_TEST_OP_MD_CHECK_IOTLB: Final = 14
IOMMU_TEST_OP_TRIGGER_IOPF: Final = 15
IOMMU_TEST_OP_DEV_CHECK_CACHE: Final = 16
IOMMU_TEST_OP_TRIGGER_VEVENT: Final = 17
IOMMU_TEST_OP_PASID_ATTACH: Final = 18
IOMMU_TEST_OP_PASID_REPLACE: Final = 19
IOMMU_TEST_OP_PASID_DETACH: Final = 20
IOMMU_TEST_OP_PASID_CHECK_HWPT: Final = 21
IOMMU_TEST_OP_DMABUF_GET: Final = 22
IOMMU_TEST_OP_DMABUF_REVOKE: Final = 23

MOCK_IOMMUPT_DEFAULT: Final = 0
MOCK_IOMMUPT_HUGE: Final = 1

MOCK_APERTURE_START: Final = 1 << 24
MOCK_APERTURE_LAST: Final = (1 << 31) - 1
MOCK_PAGE_SIZE: Final = 2048
MOCK_HUGE_PAGE_SIZE: Final = 512 * MOCK_PAGE_SIZE

MOCK_FLAGS_ACCESS_WRITE: Final = 1 << 0
MOCK_FLAGS_ACCESS_SYZ: Final = 1 << 16
MOCK_ACCESS_RW_WRITE: Final = 1 << 0
MOCK_ACCESS_RW_SLOW_PATH: Final = 1 << 2
MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES: Final = 1 << 0
MOCK_FLAGS_DEVICE_NO_DIRTY: Final = 1 << 0
MOCK_FLAGS_DEVICE_PASID: Final = 1 << 2

MOCK_NESTED_DOMAIN_IOTLB_ID_MAX: Final = 3
MOCK_NESTED_DOMAIN_IOTLB_NUM: Final = 4
MOCK_DEV_CACHE_ID_MAX: Final = 3
MOCK_DEV_CACHE_NUM: Final = 4
IOMMU_TEST_PASID_RESERVED: Final = 1024
MOCK_PASID_WIDTH: Final = 20

IOMMU_TEST_CMD: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32)

IOMMU_HW_INFO_TYPE_SELFTEST: Final = 0xFEEDBEEF
IOMMU_HW_INFO_SELFTEST_REGVAL: Final = 0xDEADBEEF
IOMMU_HWPT_DATA_SELFTEST: Final = 0xDEAD
IOMMU_TEST_IOTLB_DEFAULT: Final = 0xBADBEEF
IOMMU_TEST_DEV_CACHE_DEFAULT: Final = 0xBADDAD
IOMMU_HWPT_INVALIDATE_DATA_SELFTEST: Final = 0xDEADBEEF
IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID: Final = 0xDADBEEF
IOMMU_TEST_INVALIDATE_FLAG_ALL: Final = 1 << 0
IOMMU_VIOMMU_TYPE_SELFTEST: Final = 0xDEADBEEF
IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST: Final = 0xDEADBEEF
IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID: Final = 0xDADBEEF
IOMMU_VEVENTQ_TYPE_SELFTEST: Final = 0xBEEFBEEF
IOMMU_HW_QUEUE_TYPE_SELFTEST: Final = 0xDEADBEEF
IOMMU_TEST_HW_QUEUE_MAX: Final = 2

PAYLOAD: Final = 48  # sizeof the union


@cstruct
class IommuTestCmd(CStruct):
    """``struct iommu_test_cmd`` (72 bytes): header, the union as bytes, ``last``."""

    size: int = u32()
    op: int = u32()
    id: int = u32()
    reserved: int = u32()
    payload: bytes = pad(PAYLOAD)
    last: int = u32()
    tail_pad: bytes = pad(4)  # the struct is 8-byte aligned (the union holds u64s)


PAYLOAD_OFFSET: Final = 16
LAST_OFFSET: Final = PAYLOAD_OFFSET + PAYLOAD  # offsetof(last); offsetofend is 68


@cstruct
class AddReserved(CStruct):
    start: int = u64()
    length: int = u64()


@cstruct
class MockDomain(CStruct):
    out_stdev_id: int = u32()
    out_hwpt_id: int = u32()
    out_idev_id: int = u32()


@cstruct
class MockDomainFlags(CStruct):
    out_stdev_id: int = u32()
    out_hwpt_id: int = u32()
    out_idev_id: int = u32()
    dev_flags: int = u32()


@cstruct
class MockDomainReplace(CStruct):
    pt_id: int = u32()


@cstruct
class CheckMap(CStruct):
    iova: int = u64()
    length: int = u64()
    uptr: int = u64()


@cstruct
class CheckRefs(CStruct):
    length: int = u64()
    uptr: int = u64()
    refs: int = u32()


@cstruct
class CreateAccess(CStruct):
    out_access_fd: int = u32()
    flags: int = u32()


@cstruct
class DestroyAccessPages(CStruct):
    access_pages_id: int = u32()


@cstruct
class AccessPages(CStruct):
    flags: int = u32()
    out_access_pages_id: int = u32()
    iova: int = u64()
    length: int = u64()
    uptr: int = u64()


@cstruct
class AccessRw(CStruct):
    iova: int = u64()
    length: int = u64()
    uptr: int = u64()
    flags: int = u32()


@cstruct
class MemoryLimit(CStruct):
    limit: int = u32()


@cstruct
class AccessReplaceIoas(CStruct):
    ioas_id: int = u32()


@cstruct
class Dirty(CStruct):
    flags: int = u32()
    padding: bytes = pad(4)
    iova: int = u64()
    length: int = u64()
    page_size: int = u64()
    uptr: int = u64()
    out_nr_dirty: int = u64()


@cstruct
class CheckIotlb(CStruct):
    id: int = u32()
    iotlb: int = u32()


@cstruct
class TriggerIopf(CStruct):
    dev_id: int = u32()
    pasid: int = u32()
    grpid: int = u32()
    perm: int = u32()
    addr: int = u64()


@cstruct
class CheckDevCache(CStruct):
    id: int = u32()
    cache: int = u32()


@cstruct
class TriggerVevent(CStruct):
    dev_id: int = u32()


@cstruct
class PasidAttach(CStruct):
    pasid: int = u32()
    pt_id: int = u32()


@cstruct
class PasidDetach(CStruct):
    pasid: int = u32()


@cstruct
class PasidCheck(CStruct):
    pasid: int = u32()
    hwpt_id: int = u32()


@cstruct
class DmabufGet(CStruct):
    length: int = u32()
    open_flags: int = u32()


@cstruct
class DmabufRevoke(CStruct):
    dmabuf_fd: int = s32()
    revoked: int = u32()


@cstruct
class IommuTestHwInfo(CStruct):
    flags: int = u32()
    test_reg: int = u32()


@cstruct
class IommuHwptSelftest(CStruct):
    iotlb: int = u32()
    pagetable_type: int = u32()


@cstruct
class IommuHwptInvalidateSelftest(CStruct):
    flags: int = u32()
    iotlb_id: int = u32()


@cstruct
class IommuViommuSelftest(CStruct):
    in_data: int = u32()
    out_data: int = u32()
    out_mmap_offset: int = u64()
    out_mmap_length: int = u64()


@cstruct
class IommuViommuInvalidateSelftest(CStruct):
    flags: int = u32()
    vdev_id: int = u32()
    cache_id: int = u32()


@cstruct
class IommuViommuEventSelftest(CStruct):
    virt_id: int = u32()
