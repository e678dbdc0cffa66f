/* The client for `make bench`: times N calls of one operation, prints ns per call.
 * usage: client PATH OP N
 *   on a bench file (bench/cserver.c, bench/benchfs.py):
 *     noop     ioctl that returns 0
 *     copy64   ioctl copying 64 B in and out of the caller
 *     copy32   ioctl copying 32 B in and out (the shape of GET_REGION_INFO)
 *     pread4   4-byte pread
 *     dma2     two ioctls: 32 B in, then 24 B in and out (the shape of MAP + UNMAP)
 *   on a vfiofs mount (PATH is its root, the built-in topology):
 *     region   VFIO_DEVICE_GET_REGION_INFO(BAR0) on a cdev bound to iommufd
 *     cfg4     4-byte pread of config space on that cdev
 *     mapdma   VFIO_IOMMU_MAP_DMA + UNMAP_DMA of 4 KiB on a type1v2 container */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef VFIO_DEVICE_BIND_IOMMUFD /* Linux 6.6; older uapi headers lack it */
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
#endif

#define BENCH_NOOP _IO('E', 0)
#define BENCH_STRUCT _IO('E', 1)
#define BENCH_STRUCT32 _IO('E', 2)
#define BENCH_IN32 _IO('E', 3)

static int open_at(const char *root, const char *rel) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    int fd = open(p, O_RDWR);
    if (fd < 0) { perror(p); exit(1); }
    return fd;
}

static int bound_cdev(const char *root) {
    int dev = open_at(root, "dev/vfio/devices/vfio0"), ictx = open_at(root, "dev/iommu");
    struct { uint32_t argsz, flags; int32_t iommufd; uint32_t out_devid; uint64_t pad; } bind = {24, 0, ictx, 0, 0};
    if (ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &bind)) { perror("BIND_IOMMUFD"); exit(1); }
    return dev;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    const char *op = argv[2];
    long n = atol(argv[3]);
    int fd = -1, container = -1;
    void *buf4k = NULL;
    if (!strcmp(op, "region") || !strcmp(op, "cfg4")) {
        fd = bound_cdev(argv[1]);
    } else if (!strcmp(op, "mapdma")) {
        container = open_at(argv[1], "dev/vfio/vfio");
        int group = open_at(argv[1], "dev/vfio/0");
        if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) ||
            ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) { perror("type1 setup"); return 1; }
        buf4k = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    } else {
        fd = open(argv[1], O_RDWR);
        if (fd < 0) { perror("open"); return 1; }
    }
    unsigned char buf[64] = {0};
    char small[4];
    struct vfio_region_info reg = {.argsz = sizeof reg, .index = 0};
    struct vfio_iommu_type1_dma_map map = {.argsz = sizeof map,
        .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        .vaddr = (uintptr_t)buf4k, .iova = 1 << 20, .size = 4096};
    struct vfio_iommu_type1_dma_unmap unmap = {.argsz = sizeof unmap, .iova = 1 << 20, .size = 4096};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        long r;
        if (!strcmp(op, "noop")) r = ioctl(fd, BENCH_NOOP, 0);
        else if (!strcmp(op, "copy64")) r = ioctl(fd, BENCH_STRUCT, buf) - 42;
        else if (!strcmp(op, "copy32")) r = ioctl(fd, BENCH_STRUCT32, buf);
        else if (!strcmp(op, "dma2")) r = ioctl(fd, BENCH_IN32, buf) | ioctl(fd, BENCH_STRUCT32, buf);
        else if (!strcmp(op, "pread4")) r = pread(fd, small, 4, 0) - 4;
        else if (!strcmp(op, "region")) r = ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &reg);
        else if (!strcmp(op, "cfg4")) r = pread(fd, small, 4, 7ULL << 40) - 4;
        else if (!strcmp(op, "mapdma")) {
            unmap.size = 4096;
            r = ioctl(container, VFIO_IOMMU_MAP_DMA, &map) | ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap);
        } else { fprintf(stderr, "unknown op %s\n", op); return 2; }
        if (r != 0) { perror(op); return 1; }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
    printf("%.0f\n", ns / n);
    return 0;
}
