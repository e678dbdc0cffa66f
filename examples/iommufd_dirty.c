/* IOMMU dirty tracking while the memcpy device DMAs (what live migration reads): a HWPT
 * allocated with DIRTY_TRACKING, tracking switched on, two copies into pages 1 and 3 of
 * a 16-page buffer, and IOMMU_HWPT_GET_DIRTY_BITMAP reporting exactly those pages (with
 * NO_CLEAR first, then reading and clearing).
 *
 *   gcc -o iommufd_dirty examples/iommufd_dirty.c
 *   vfiofs run --config examples/iommufd_mock.toml -- ./iommufd_dirty
 */
#include "iommufd_common.h"

#include <sys/mman.h>

enum { PAGE = 4096, NPAGES = 16 };

static uint64_t bitmap(uint32_t hwpt, uint64_t iova, uint32_t flags, int *rc) {
    uint64_t bits = 0;
    struct iommu_hwpt_get_dirty_bitmap g = {.size = sizeof g, .hwpt_id = hwpt, .flags = flags, .iova = iova,
                                           .length = NPAGES * PAGE, .page_size = PAGE, .data = (uintptr_t)&bits};
    *rc = ioctl(iommufd, IOMMU_HWPT_GET_DIRTY_BITMAP, &g);
    return bits;
}

int main(void) {
    uint32_t dev_id = open_bound("vfio0");
    struct iommu_hw_info info = {.size = sizeof info, .dev_id = dev_id};
    CHECK(ioctl(iommufd, IOMMU_GET_HW_INFO, &info) == 0 && (info.out_capabilities & IOMMU_HW_CAP_DIRTY_TRACKING),
          "IOMMU_GET_HW_INFO: the IOMMU can track dirty pages");
    uint32_t ioas = ioas_alloc();
    struct iommu_hwpt_alloc h = {.size = sizeof h, .flags = IOMMU_HWPT_ALLOC_DIRTY_TRACKING, .dev_id = dev_id, .pt_id = ioas};
    CHECK(ioctl(iommufd, IOMMU_HWPT_ALLOC, &h) == 0, "IOMMU_HWPT_ALLOC DIRTY_TRACKING: hwpt %u", h.out_hwpt_id);
    attach(h.out_hwpt_id);

    char *buf = mmap(NULL, (NPAGES + 1) * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *src = buf + NPAGES * PAGE;
    memset(src, 0x5a, PAGE);
    uint64_t iova = MOCK_APERTURE_START, src_iova = iova + 0x100000;
    int prot = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
    ioas_map(ioas, buf, iova, NPAGES * PAGE, prot);
    ioas_map(ioas, src, src_iova, PAGE, IOMMU_IOAS_MAP_READABLE);

    int rc;
    bitmap(h.out_hwpt_id, iova, 0, &rc);
    CHECK(rc < 0 && errno == EINVAL, "GET_DIRTY_BITMAP before tracking is on: EINVAL");
    CHECK(dma_copy(src_iova, iova + 5 * PAGE, PAGE) == 2, "a copy before tracking (not reported)");
    struct iommu_hwpt_set_dirty_tracking t = {.size = sizeof t, .flags = IOMMU_HWPT_DIRTY_TRACKING_ENABLE, .hwpt_id = h.out_hwpt_id};
    CHECK(ioctl(iommufd, IOMMU_HWPT_SET_DIRTY_TRACKING, &t) == 0, "IOMMU_HWPT_SET_DIRTY_TRACKING: on");
    CHECK(bitmap(h.out_hwpt_id, iova, 0, &rc) == 0 && rc == 0, "bitmap: nothing dirty yet");

    CHECK(dma_copy(src_iova, iova + 1 * PAGE, PAGE) == 2, "the device writes page 1");
    CHECK(dma_copy(src_iova, iova + 3 * PAGE + 100, 200) == 2, "the device writes 200 bytes into page 3");
    CHECK(buf[PAGE] == 0x5a && buf[3 * PAGE + 100] == 0x5a, "the bytes are in the buffer");
    uint64_t want = 1u << 1 | 1u << 3;
    uint64_t got = bitmap(h.out_hwpt_id, iova, IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR, &rc);
    CHECK(rc == 0 && got == want, "GET_DIRTY_BITMAP NO_CLEAR: %#llx (pages 1 and 3)", (unsigned long long)got);
    got = bitmap(h.out_hwpt_id, iova, 0, &rc);
    CHECK(rc == 0 && got == want, "GET_DIRTY_BITMAP: %#llx again, now cleared", (unsigned long long)got);
    CHECK(bitmap(h.out_hwpt_id, iova, 0, &rc) == 0 && rc == 0, "bitmap: clean");
    t.flags = 0;
    CHECK(ioctl(iommufd, IOMMU_HWPT_SET_DIRTY_TRACKING, &t) == 0, "IOMMU_HWPT_SET_DIRTY_TRACKING: off");
    printf("done, %d failures\n", failures);
    return 0;
}
