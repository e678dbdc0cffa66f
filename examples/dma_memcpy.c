/* DMA through the IOMMU with the memcpy engine (docs/devices.md): map two buffers,
 * program the engine through region writes, wait for the MSI-X eventfd, check the bytes;
 * then copies from an unmapped IOVA and into a read-only mapping fault, write nothing and
 * raise no interrupt.
 *
 *   usage: dma_memcpy GROUP BDF          the group path (under `vfiofs run`)
 *          dma_memcpy cdev vfioX         the cdev path (VFIO_ROOT=<mountpoint> on a plain mount) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHECK(cond, ...) do { \
    if (cond) { printf("ok   "); printf(__VA_ARGS__); printf("\n"); } \
    else { printf("FAIL "); printf(__VA_ARGS__); printf(" (errno %s)\n", strerrorname_np(errno)); exit(1); } \
} while (0)

enum { SRC = 0x00, DST = 0x08, LEN = 0x10, DOORBELL = 0x14, STATUS = 0x18, ERROR = 0x1c, FAULT = 0x20, COUNT = 0x28 };

static int device;
static uint64_t bar0;

static void wr32(uint32_t off, uint32_t v) { if (pwrite(device, &v, 4, bar0 + off) != 4) { perror("pwrite"); exit(1); } }
static void wr64(uint32_t off, uint64_t v) { wr32(off, (uint32_t)v); wr32(off + 4, v >> 32); }
static uint32_t rd32(uint32_t off) { uint32_t v = 0; if (pread(device, &v, 4, bar0 + off) != 4) { perror("pread"); exit(1); } return v; }

static int iommufd = -1;
static uint32_t ioas;

static void map(int container, void *va, uint64_t iova, size_t len, uint32_t flags) {
    if (iommufd >= 0) {  /* cdev path: the IOAS */
        uint32_t f = IOMMU_IOAS_MAP_FIXED_IOVA | (flags & VFIO_DMA_MAP_FLAG_READ ? IOMMU_IOAS_MAP_READABLE : 0) |
                     (flags & VFIO_DMA_MAP_FLAG_WRITE ? IOMMU_IOAS_MAP_WRITEABLE : 0);
        struct iommu_ioas_map m = {.size = sizeof m, .flags = f, .ioas_id = ioas, .user_va = (uintptr_t)va, .length = len, .iova = iova};
        CHECK(ioctl(iommufd, IOMMU_IOAS_MAP, &m) == 0, "IOAS_MAP iova %#llx flags %u", (unsigned long long)iova, f);
        return;
    }
    struct vfio_iommu_type1_dma_map m = {.argsz = sizeof m, .flags = flags, .vaddr = (uintptr_t)va, .iova = iova, .size = len};
    CHECK(ioctl(container, VFIO_IOMMU_MAP_DMA, &m) == 0, "MAP_DMA iova %#llx flags %u", (unsigned long long)iova, flags);
}

static void open_cdev(const char *name) {
    const char *root = getenv("VFIO_ROOT") ? getenv("VFIO_ROOT") : "";
    char path[4096];
    snprintf(path, sizeof path, "%s/dev/vfio/devices/%s", root, name);
    device = open(path, O_RDWR);
    snprintf(path, sizeof path, "%s/dev/iommu", root);
    iommufd = open(path, O_RDWR);
    CHECK(device >= 0 && iommufd >= 0, "open the cdev and /dev/iommu");
    struct vfio_device_bind_iommufd bind = {.argsz = sizeof bind, .iommufd = iommufd};
    CHECK(ioctl(device, VFIO_DEVICE_BIND_IOMMUFD, &bind) == 0, "BIND_IOMMUFD");
    struct iommu_ioas_alloc alloc = {.size = sizeof alloc};
    CHECK(ioctl(iommufd, IOMMU_IOAS_ALLOC, &alloc) == 0, "IOAS_ALLOC");
    ioas = alloc.out_ioas_id;
    struct vfio_device_attach_iommufd_pt attach = {.argsz = sizeof attach, .pt_id = ioas};
    CHECK(ioctl(device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) == 0, "ATTACH_IOMMUFD_PT");
}

static int interrupted(int ev, int timeout_ms) {
    struct pollfd p = {.fd = ev, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1) return 0;
    uint64_t n;
    return read(ev, &n, 8) == 8 ? (int)n : 0;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int container = -1;
    if (!strcmp(argv[1], "cdev")) {
        open_cdev(argv[2]);
    } else {
        char path[64];
        container = open("/dev/vfio/vfio", O_RDWR);
        snprintf(path, sizeof path, "/dev/vfio/%s", argv[1]);
        int group = open(path, O_RDWR);
        CHECK(container >= 0 && group >= 0, "open container and group");
        CHECK(ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) == 0, "SET_CONTAINER");
        CHECK(ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) == 0, "SET_IOMMU");
        device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, argv[2]);
        CHECK(device >= 0, "GET_DEVICE_FD");
    }
    struct vfio_region_info reg = {.argsz = sizeof reg, .index = VFIO_PCI_BAR0_REGION_INDEX};
    CHECK(ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &reg) == 0, "BAR0 at %#llx", (unsigned long long)reg.offset);
    bar0 = reg.offset;

    size_t len = 4096;
    char *src = mmap(NULL, 3 * len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *dst = src + len, *ro = src + 2 * len;
    for (size_t i = 0; i < len; i++) src[i] = (char)(i * 7 + 1);
    map(container, src, 0x100000, len, VFIO_DMA_MAP_FLAG_READ);
    map(container, dst, 0x200000, len, VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE);
    map(container, ro, 0x300000, len, VFIO_DMA_MAP_FLAG_READ);

    /* MSI-X vector 0 -> an eventfd */
    int ev = eventfd(0, 0);
    char buf[sizeof(struct vfio_irq_set) + sizeof(int)];
    struct vfio_irq_set *irq = (void *)buf;
    *irq = (struct vfio_irq_set){.argsz = sizeof buf, .index = VFIO_PCI_MSIX_IRQ_INDEX, .start = 0, .count = 1,
                                 .flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER};
    memcpy(irq->data, &ev, sizeof ev);
    CHECK(ioctl(device, VFIO_DEVICE_SET_IRQS, irq) == 0, "SET_IRQS: MSI-X vector 0 -> eventfd");

    wr64(SRC, 0x100000); wr64(DST, 0x200000); wr32(LEN, len); wr32(DOORBELL, 1);
    CHECK(interrupted(ev, 5000) == 1, "copy done: one interrupt on the eventfd");
    CHECK(rd32(STATUS) == 2 && rd32(COUNT) == 1, "STATUS done, COUNT 1");
    CHECK(memcmp(src, dst, len) == 0, "destination holds the source bytes");

    memset(dst, 0, len);
    wr64(SRC, 0x900000); wr32(DOORBELL, 1);
    CHECK(rd32(STATUS) == 3 && rd32(ERROR) == 1 && rd32(FAULT) == 0x900000, "unmapped source: STATUS error, fault at 0x900000");
    CHECK(interrupted(ev, 200) == 0, "no interrupt on a fault");
    CHECK(dst[0] == 0 && dst[len - 1] == 0, "nothing written");

    wr64(SRC, 0x100000); wr64(DST, 0x300000); wr32(DOORBELL, 1);
    CHECK(rd32(STATUS) == 3 && rd32(ERROR) == 2, "read-only destination: STATUS error");
    CHECK(interrupted(ev, 200) == 0 && ro[0] == 0, "no interrupt, nothing written");
    printf("done\n");
    return 0;
}
