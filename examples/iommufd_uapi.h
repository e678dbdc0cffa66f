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
