/* The cdev + iommufd flow of the kernel's vfio.rst: find vfioX through sysfs, open the
 * device cdev and /dev/iommu, bind, allocate an IOAS, attach, map, use the device, unmap,
 * detach. No group, no container, no fd injection: works on a plain `vfiofs mount`.
 *
 *   usage: cdev_iommufd BDF       (VFIO_ROOT=<mountpoint> for a plain mount) */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHECK(cond, ...) do { \
    if (cond) { printf("ok   "); printf(__VA_ARGS__); printf("\n"); } \
    else { printf("FAIL "); printf(__VA_ARGS__); printf(" (errno %s)\n", strerrorname_np(errno)); exit(1); } \
} while (0)

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *root = getenv("VFIO_ROOT") ? getenv("VFIO_ROOT") : "";
    char path[4096], name[256] = "";
    snprintf(path, sizeof path, "%s/sys/bus/pci/devices/%s/vfio-dev", root, argv[1]);
    DIR *d = opendir(path);
    CHECK(d != NULL, "opendir %s", path);
    for (struct dirent *e; (e = readdir(d));)
        if (!strncmp(e->d_name, "vfio", 4)) snprintf(name, sizeof name, "%s", e->d_name);
    closedir(d);
    CHECK(name[0], "found %s", name);

    snprintf(path, sizeof path, "%s/dev/vfio/devices/%s", root, name);
    int device = open(path, O_RDWR);
    CHECK(device >= 0, "open %s", path);
    struct vfio_device_info info = {.argsz = sizeof info};
    CHECK(ioctl(device, VFIO_DEVICE_GET_INFO, &info) == -1 && errno == EINVAL, "GET_INFO before BIND is EINVAL");
    snprintf(path, sizeof path, "%s/dev/iommu", root);
    int iommufd = open(path, O_RDWR);
    CHECK(iommufd >= 0, "open %s", path);

    struct vfio_device_bind_iommufd bind = {.argsz = sizeof bind, .iommufd = iommufd};
    CHECK(ioctl(device, VFIO_DEVICE_BIND_IOMMUFD, &bind) == 0, "BIND_IOMMUFD: devid %u", bind.out_devid);
    CHECK(ioctl(device, VFIO_DEVICE_BIND_IOMMUFD, &bind) == -1 && errno == EINVAL, "second BIND is EINVAL");
    struct iommu_ioas_alloc alloc = {.size = sizeof alloc};
    CHECK(ioctl(iommufd, IOMMU_IOAS_ALLOC, &alloc) == 0, "IOAS_ALLOC: ioas %u", alloc.out_ioas_id);
    struct vfio_device_attach_iommufd_pt attach = {.argsz = sizeof attach, .pt_id = alloc.out_ioas_id};
    CHECK(ioctl(device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) == 0, "ATTACH_IOMMUFD_PT: hwpt %u", attach.pt_id);
    struct iommu_destroy destroy = {.size = sizeof destroy, .id = alloc.out_ioas_id};
    CHECK(ioctl(iommufd, IOMMU_DESTROY, &destroy) == -1 && errno == EBUSY, "DESTROY of the attached IOAS is EBUSY");

    struct iommu_ioas_iova_ranges ranges = {.size = sizeof ranges, .ioas_id = alloc.out_ioas_id};
    CHECK(ioctl(iommufd, IOMMU_IOAS_IOVA_RANGES, &ranges) == -1 && errno == EMSGSIZE, "IOVA_RANGES: %u ranges (EMSGSIZE)", ranges.num_iovas);
    struct iommu_iova_range *r = calloc(ranges.num_iovas, sizeof *r);
    ranges.allowed_iovas = (uintptr_t)r;
    CHECK(ioctl(iommufd, IOMMU_IOAS_IOVA_RANGES, &ranges) == 0, "IOVA_RANGES, alignment %llu", (unsigned long long)ranges.out_iova_alignment);
    for (unsigned i = 0; i < ranges.num_iovas; i++)
        printf("     range %#llx-%#llx\n", (unsigned long long)r[i].start, (unsigned long long)r[i].last);

    size_t len = 1 << 20;
    void *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct iommu_ioas_map map = {.size = sizeof map, .ioas_id = alloc.out_ioas_id, .user_va = (uintptr_t)buf, .length = len,
                                 .iova = 0x100000, .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE};
    CHECK(ioctl(iommufd, IOMMU_IOAS_MAP, &map) == 0, "IOAS_MAP at %#llx", (unsigned long long)map.iova);
    CHECK(ioctl(device, VFIO_DEVICE_GET_INFO, &info) == 0 && info.num_regions == 9, "DEVICE_GET_INFO: %u regions", info.num_regions);
    struct vfio_region_info reg = {.argsz = sizeof reg, .index = VFIO_PCI_CONFIG_REGION_INDEX};
    CHECK(ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &reg) == 0, "config region at %#llx", (unsigned long long)reg.offset);
    uint16_t vendor;
    CHECK(pread(device, &vendor, 2, reg.offset) == 2, "vendor %04x", vendor);

    struct iommu_ioas_unmap unmap = {.size = sizeof unmap, .ioas_id = alloc.out_ioas_id, .iova = 0x100000, .length = len};
    CHECK(ioctl(iommufd, IOMMU_IOAS_UNMAP, &unmap) == 0 && unmap.length == len, "IOAS_UNMAP %llu bytes", (unsigned long long)unmap.length);
    struct vfio_device_detach_iommufd_pt detach = {.argsz = sizeof detach};
    CHECK(ioctl(device, VFIO_DEVICE_DETACH_IOMMUFD_PT, &detach) == 0, "DETACH_IOMMUFD_PT");
    CHECK(ioctl(iommufd, IOMMU_DESTROY, &destroy) == 0, "DESTROY of the detached IOAS");
    close(device);
    close(iommufd);
    printf("done\n");
    return 0;
}
