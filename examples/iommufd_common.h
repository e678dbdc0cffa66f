/* Helpers shared by the iommufd_*.c examples: checks, the memcpy engine's registers,
 * and opening a VFIO cdev bound to /dev/iommu. */
#pragma once
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "iommufd_uapi.h" /* iommufd_test.h: IOMMU_TEST_CMD */

static int failures;
#define CHECK(cond, ...) do { \
    if (cond) { printf("ok   "); printf(__VA_ARGS__); printf("\n"); } \
    else { printf("FAIL "); printf(__VA_ARGS__); printf(" (errno %s)\n", strerrorname_np(errno)); exit(1); } \
} while (0)

/* the memcpy engine (docs/devices.md) */
enum { SRC = 0x00, DST = 0x08, LEN = 0x10, DOORBELL = 0x14, STATUS = 0x18, ERROR = 0x1c, FAULT = 0x20 };
static int device = -1, iommufd = -1;
static uint64_t bar0;

static inline void wr32(uint32_t off, uint32_t v) { if (pwrite(device, &v, 4, bar0 + off) != 4) { perror("pwrite"); exit(1); } }
static inline void wr64(uint32_t off, uint64_t v) { wr32(off, (uint32_t)v); wr32(off + 4, v >> 32); }
static inline uint32_t rd32(uint32_t off) { uint32_t v = 0; if (pread(device, &v, 4, bar0 + off) != 4) { perror("pread"); exit(1); } return v; }

/* one copy by the device; its STATUS (2 done, 3 DMA fault) */
static inline uint32_t dma_copy(uint64_t src, uint64_t dst, uint32_t len) {
    wr64(SRC, src); wr64(DST, dst); wr32(LEN, len); wr32(DOORBELL, 1);
    return rd32(STATUS);
}

/* open /dev/vfio/devices/NAME and /dev/iommu, bind them; the device's iommufd id */
static inline uint32_t open_bound(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "/dev/vfio/devices/%s", name);
    device = open(path, O_RDWR);
    iommufd = open("/dev/iommu", O_RDWR);
    CHECK(device >= 0 && iommufd >= 0, "open %s and /dev/iommu", path);
    struct vfio_device_bind_iommufd bind = {.argsz = sizeof bind, .iommufd = iommufd};
    CHECK(ioctl(device, VFIO_DEVICE_BIND_IOMMUFD, &bind) == 0, "VFIO_DEVICE_BIND_IOMMUFD: dev_id %u", bind.out_devid);
    struct vfio_region_info reg = {.argsz = sizeof reg, .index = VFIO_PCI_BAR0_REGION_INDEX};
    CHECK(ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &reg) == 0, "BAR0 at %#llx", (unsigned long long)reg.offset);
    bar0 = reg.offset;
    return bind.out_devid;
}

static inline uint32_t ioas_alloc(void) {
    struct iommu_ioas_alloc a = {.size = sizeof a};
    CHECK(ioctl(iommufd, IOMMU_IOAS_ALLOC, &a) == 0, "IOMMU_IOAS_ALLOC: ioas %u", a.out_ioas_id);
    return a.out_ioas_id;
}

static inline void ioas_map(uint32_t ioas, void *va, uint64_t iova, size_t len, uint32_t prot) {
    struct iommu_ioas_map m = {.size = sizeof m, .flags = IOMMU_IOAS_MAP_FIXED_IOVA | prot, .ioas_id = ioas,
                               .user_va = (uintptr_t)va, .length = len, .iova = iova};
    CHECK(ioctl(iommufd, IOMMU_IOAS_MAP, &m) == 0, "IOMMU_IOAS_MAP %#zx bytes at iova %#llx", len, (unsigned long long)iova);
}

static inline void attach(uint32_t pt_id) {
    struct vfio_device_attach_iommufd_pt at = {.argsz = sizeof at, .pt_id = pt_id};
    CHECK(ioctl(device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) == 0, "VFIO_DEVICE_ATTACH_IOMMUFD_PT to %u", pt_id);
}
