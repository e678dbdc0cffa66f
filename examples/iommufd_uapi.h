/* The iommufd and vfio-cdev uapi this example needs, for systems whose
 * <linux/iommufd.h> / <linux/vfio.h> predate them (numbers from the kernel headers). */
#pragma once
#include <linux/types.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>

#ifndef VFIO_DEVICE_BIND_IOMMUFD
struct vfio_device_bind_iommufd { __u32 argsz, flags; __s32 iommufd; __u32 out_devid; };
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
struct vfio_device_attach_iommufd_pt { __u32 argsz, flags, pt_id; };
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)
struct vfio_device_detach_iommufd_pt { __u32 argsz, flags; };
#define VFIO_DEVICE_DETACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 20)
#endif

#define IOMMUFD_TYPE (';')
#define IOMMUFD_CMD_BASE 0x80
struct iommu_destroy { __u32 size, id; };
#define IOMMU_DESTROY _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0)
struct iommu_ioas_alloc { __u32 size, flags, out_ioas_id; };
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 1)
struct iommu_iova_range { __aligned_u64 start, last; };
struct iommu_ioas_iova_ranges { __u32 size, ioas_id, num_iovas, __reserved; __aligned_u64 allowed_iovas, out_iova_alignment; };
#define IOMMU_IOAS_IOVA_RANGES _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 4)
enum { IOMMU_IOAS_MAP_FIXED_IOVA = 1, IOMMU_IOAS_MAP_WRITEABLE = 2, IOMMU_IOAS_MAP_READABLE = 4 };
struct iommu_ioas_map { __u32 size, flags, ioas_id, __reserved; __aligned_u64 user_va, length, iova; };
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 5)
struct iommu_ioas_unmap { __u32 size, ioas_id; __aligned_u64 iova, length; };
#define IOMMU_IOAS_UNMAP _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 6)

/* The rest of <linux/iommufd.h> (Linux 7.2) that the iommufd_*.c examples use. */
struct iommu_ioas_map_file { __u32 size, flags, ioas_id; __s32 fd; __aligned_u64 start, length, iova; };
#define IOMMU_IOAS_MAP_FILE _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 15)
enum { IOMMU_HWPT_ALLOC_NEST_PARENT = 1, IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 2,
       IOMMU_HWPT_FAULT_ID_VALID = 4, IOMMU_HWPT_ALLOC_PASID = 8 };
struct iommu_hwpt_alloc { __u32 size, flags, dev_id, pt_id, out_hwpt_id, __reserved, data_type, data_len;
                          __aligned_u64 data_uptr; __u32 fault_id, __reserved2; };
#define IOMMU_HWPT_ALLOC _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 9)
enum { IOMMU_HW_CAP_DIRTY_TRACKING = 1 };
struct iommu_hw_info { __u32 size, flags, dev_id, data_len; __aligned_u64 data_uptr; __u32 out_data_type;
                       __u8 out_max_pasid_log2, __reserved[3]; __aligned_u64 out_capabilities; };
#define IOMMU_GET_HW_INFO _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 10)
enum { IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1, IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1 };
struct iommu_hwpt_set_dirty_tracking { __u32 size, flags, hwpt_id, __reserved; };
#define IOMMU_HWPT_SET_DIRTY_TRACKING _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 11)
struct iommu_hwpt_get_dirty_bitmap { __u32 size, hwpt_id, flags, __reserved; __aligned_u64 iova, length, page_size, data; };
#define IOMMU_HWPT_GET_DIRTY_BITMAP _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 12)
struct iommu_hwpt_invalidate { __u32 size, hwpt_id; __aligned_u64 data_uptr; __u32 data_type, entry_len, entry_num, __reserved; };
#define IOMMU_HWPT_INVALIDATE _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 13)
enum { IOMMU_PGFAULT_FLAGS_PASID_VALID = 1, IOMMU_PGFAULT_FLAGS_LAST_PAGE = 2 };
enum { IOMMU_PGFAULT_PERM_READ = 1, IOMMU_PGFAULT_PERM_WRITE = 2 };
struct iommu_hwpt_pgfault { __u32 flags, dev_id, pasid, grpid, perm, __reserved; __aligned_u64 addr; __u32 length, cookie; };
enum { IOMMUFD_PAGE_RESP_SUCCESS = 0, IOMMUFD_PAGE_RESP_INVALID = 1 };
struct iommu_hwpt_page_response { __u32 cookie, code; };
struct iommu_fault_alloc { __u32 size, flags, out_fault_id, out_fault_fd; };
#define IOMMU_FAULT_QUEUE_ALLOC _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 14)
struct iommu_viommu_alloc { __u32 size, flags, type, dev_id, hwpt_id, out_viommu_id, data_len, __reserved; __aligned_u64 data_uptr; };
#define IOMMU_VIOMMU_ALLOC _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 16)
struct iommu_vdevice_alloc { __u32 size, viommu_id, dev_id, out_vdevice_id; __aligned_u64 virt_id; };
#define IOMMU_VDEVICE_ALLOC _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 17)
enum { IOMMU_VEVENTQ_FLAG_LOST_EVENTS = 1 };
struct iommufd_vevent_header { __u32 flags, sequence; };
struct iommu_veventq_alloc { __u32 size, flags, viommu_id, type, veventq_depth, out_veventq_id, out_veventq_fd, __reserved; };
#define IOMMU_VEVENTQ_ALLOC _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 19)

/* drivers/iommu/iommufd/iommufd_test.h: the mock IOMMU (not installed by any package;
 * the kernel's selftests include it from the source tree). */
enum { IOMMU_TEST_OP_MOCK_DOMAIN = 2, IOMMU_TEST_OP_MD_CHECK_IOTLB = 14, IOMMU_TEST_OP_TRIGGER_VEVENT = 17 };
enum { MOCK_APERTURE_START = 1UL << 24 };
struct iommu_test_cmd {
    __u32 size, op, id, __reserved;
    union {
        struct { __u32 out_stdev_id, out_hwpt_id, out_idev_id; } mock_domain;
        struct { __u32 id, iotlb; } check_iotlb;
        struct { __u32 dev_id; } trigger_vevent;
        struct { __u32 flags; __aligned_u64 iova, length, page_size, uptr, out_nr_dirty; } dirty; /* the largest */
    };
    __u32 last;
};
#define IOMMU_TEST_CMD _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32)
#define IOMMU_HW_INFO_TYPE_SELFTEST 0xfeedbeef
#define IOMMU_HW_INFO_SELFTEST_REGVAL 0xdeadbeef
struct iommu_test_hw_info { __u32 flags, test_reg; };
#define IOMMU_HWPT_DATA_SELFTEST 0xdead
#define IOMMU_TEST_IOTLB_DEFAULT 0xbadbeef
struct iommu_hwpt_selftest { __u32 iotlb, pagetable_type; };
#define IOMMU_HWPT_INVALIDATE_DATA_SELFTEST 0xdeadbeef
struct iommu_hwpt_invalidate_selftest { __u32 flags, iotlb_id; };
#define IOMMU_VIOMMU_TYPE_SELFTEST 0xdeadbeef
#define IOMMU_VEVENTQ_TYPE_SELFTEST 0xbeefbeef
struct iommu_viommu_event_selftest { __u32 virt_id; };
