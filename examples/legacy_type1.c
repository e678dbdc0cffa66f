/* The legacy VFIO flow of the kernel's Documentation/driver-api/vfio.rst: container,
 * group, type1 IOMMU, DMA mapping, device fd, regions, IRQs, reset.
 *
 *   usage: legacy_type1 GROUP BDF        e.g. legacy_type1 0 0000:00:04.0
 *
 * VFIO_ROOT, if set, is prepended to /dev/vfio/... (a plain `vfiofs mount` point).
 * Prints one line per step ("ok ..." or "FAIL ...") and exits non-zero on the first
 * failure. Run it under `vfiofs run` (GET_DEVICE_FD needs the fd injection). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static int failures;
#define CHECK(cond, ...) do { \
    if (cond) { printf("ok   "); printf(__VA_ARGS__); printf("\n"); } \
    else { printf("FAIL "); printf(__VA_ARGS__); printf(" (errno %s)\n", strerrorname_np(errno)); failures++; exit(1); } \
} while (0)

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s GROUP BDF\n", argv[0]); return 2; }
    const char *root = getenv("VFIO_ROOT") ? getenv("VFIO_ROOT") : "";
    char path[4096];
    snprintf(path, sizeof path, "%s/dev/vfio/vfio", root);
    int container = open(path, O_RDWR);
    CHECK(container >= 0, "open %s", path);
    CHECK(ioctl(container, VFIO_GET_API_VERSION) == VFIO_API_VERSION, "VFIO_GET_API_VERSION");
    CHECK(ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) == 1, "CHECK_EXTENSION(TYPE1)");
    CHECK(ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) == 1, "CHECK_EXTENSION(TYPE1v2)");

    snprintf(path, sizeof path, "%s/dev/vfio/%s", root, argv[1]);
    int group = open(path, O_RDWR);
    CHECK(group >= 0, "open %s", path);
    struct vfio_group_status status = {.argsz = sizeof status};
    CHECK(ioctl(group, VFIO_GROUP_GET_STATUS, &status) == 0, "GROUP_GET_STATUS");
    CHECK(status.flags == VFIO_GROUP_FLAGS_VIABLE, "group viable, no container (flags=%u)", status.flags);
    CHECK(ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) == 0, "GROUP_SET_CONTAINER");
    CHECK(ioctl(group, VFIO_GROUP_GET_STATUS, &status) == 0 &&
          status.flags == (VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET), "status now CONTAINER_SET");
    CHECK(ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) == 0, "SET_IOMMU(TYPE1v2)");

    /* IOMMU_GET_INFO twice: the first call learns the size the capabilities need */
    struct vfio_iommu_type1_info small = {.argsz = sizeof small};
    CHECK(ioctl(container, VFIO_IOMMU_GET_INFO, &small) == 0, "IOMMU_GET_INFO (argsz %u -> %u)", (unsigned)sizeof small, small.argsz);
    CHECK(small.flags & VFIO_IOMMU_INFO_CAPS && small.cap_offset == 0 && small.argsz > sizeof small, "caps announced, not copied");
    struct vfio_iommu_type1_info *info = calloc(1, small.argsz);
    info->argsz = small.argsz;
    CHECK(ioctl(container, VFIO_IOMMU_GET_INFO, info) == 0 && info->cap_offset == sizeof *info, "IOMMU_GET_INFO with caps");
    CHECK(info->iova_pgsizes & 4096, "iova_pgsizes %#llx", (unsigned long long)info->iova_pgsizes);
    int nranges = -1;
    for (uint32_t off = info->cap_offset; off; ) {
        struct vfio_info_cap_header *h = (void *)((char *)info + off);
        if (h->id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
            struct vfio_iommu_type1_info_cap_iova_range *r = (void *)h;
            nranges = r->nr_iovas;
            for (uint32_t i = 0; i < r->nr_iovas; i++)
                printf("     iova range %#llx-%#llx\n", (unsigned long long)r->iova_ranges[i].start, (unsigned long long)r->iova_ranges[i].end);
        }
        off = h->next;
    }
    CHECK(nranges >= 1, "IOVA_RANGE capability: %d ranges", nranges);

    /* map 1 MiB of our memory at IOVA 0 */
    size_t len = 1 << 20;
    void *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct vfio_iommu_type1_dma_map map = {.argsz = sizeof map, .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
                                           .vaddr = (uintptr_t)buf, .iova = 0, .size = len};
    CHECK(ioctl(container, VFIO_IOMMU_MAP_DMA, &map) == 0, "MAP_DMA 1 MiB at IOVA 0");
    CHECK(ioctl(container, VFIO_IOMMU_MAP_DMA, &map) == -1 && errno == EEXIST, "overlapping MAP_DMA is EEXIST");

    int device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, argv[2]);
    CHECK(device >= 0, "GROUP_GET_DEVICE_FD(%s) = %d", argv[2], device);
    CHECK(fcntl(device, F_GETFD) & FD_CLOEXEC, "device fd is close-on-exec");
    CHECK(ioctl(group, VFIO_GROUP_GET_DEVICE_FD, "0000:ff:1f.7") == -1 && errno == ENODEV, "unknown device is ENODEV");

    struct vfio_device_info dinfo = {.argsz = sizeof dinfo};
    CHECK(ioctl(device, VFIO_DEVICE_GET_INFO, &dinfo) == 0, "DEVICE_GET_INFO");
    CHECK(dinfo.flags & VFIO_DEVICE_FLAGS_PCI && dinfo.num_regions == VFIO_PCI_NUM_REGIONS && dinfo.num_irqs == VFIO_PCI_NUM_IRQS,
          "flags %#x, %u regions, %u irqs", dinfo.flags, dinfo.num_regions, dinfo.num_irqs);
    for (uint32_t i = 0; i < dinfo.num_regions; i++) {
        struct vfio_region_info reg = {.argsz = sizeof reg, .index = i};
        CHECK(ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &reg) == 0, "region %u: size %#llx offset %#llx flags %#x",
              i, (unsigned long long)reg.size, (unsigned long long)reg.offset, reg.flags);
        if (i == VFIO_PCI_CONFIG_REGION_INDEX) {
            uint16_t ids[2];
            CHECK(pread(device, ids, 4, reg.offset) == 4, "config space: vendor %04x device %04x", ids[0], ids[1]);
        }
    }
    for (uint32_t i = 0; i < dinfo.num_irqs; i++) {
        struct vfio_irq_info irq = {.argsz = sizeof irq, .index = i};
        int r = ioctl(device, VFIO_DEVICE_GET_IRQ_INFO, &irq);
        CHECK(r == 0 || (i == VFIO_PCI_ERR_IRQ_INDEX && errno == EINVAL), "irq %u: count %u flags %#x", i, irq.count, irq.flags);
    }
    CHECK(ioctl(device, VFIO_DEVICE_RESET) == 0, "DEVICE_RESET");

    struct vfio_iommu_type1_dma_unmap unmap = {.argsz = sizeof unmap, .iova = 0, .size = len};
    CHECK(ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap) == 0 && unmap.size == len, "UNMAP_DMA unmapped %llu bytes",
          (unsigned long long)unmap.size);
    close(device);
    close(group);
    close(container);
    printf("done, %d failures\n", failures);
    return 0;
}
