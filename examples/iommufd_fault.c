/* A fault-queue round trip: IOMMU_FAULT_QUEUE_ALLOC gives an fd; a HWPT allocated with
 * that queue (FAULT_ID_VALID) takes the device's page faults; the memcpy device writes
 * into a read-only mapping, poll says a fault record waits, read() returns the
 * iommu_hwpt_pgfault, and write() answers it with an iommu_hwpt_page_response.
 *
 *   gcc -o iommufd_fault examples/iommufd_fault.c
 *   vfiofs run --config examples/iommufd_mock.toml -- ./iommufd_fault
 */
#include "iommufd_common.h"

#include <poll.h>
#include <sys/mman.h>

int main(void) {
    uint32_t dev_id = open_bound("vfio0");
    struct iommu_fault_alloc fa = {.size = sizeof fa};
    CHECK(ioctl(iommufd, IOMMU_FAULT_QUEUE_ALLOC, &fa) == 0 && fa.out_fault_fd > 2,
          "IOMMU_FAULT_QUEUE_ALLOC: fault %u, fd %u", fa.out_fault_id, fa.out_fault_fd);
    int ffd = (int)fa.out_fault_fd;
    uint32_t ioas = ioas_alloc();
    struct iommu_hwpt_alloc h = {.size = sizeof h, .flags = IOMMU_HWPT_FAULT_ID_VALID, .dev_id = dev_id, .pt_id = ioas,
                                 .fault_id = fa.out_fault_id};
    CHECK(ioctl(iommufd, IOMMU_HWPT_ALLOC, &h) == 0, "IOMMU_HWPT_ALLOC with the fault queue: hwpt %u", h.out_hwpt_id);
    attach(h.out_hwpt_id);

    char *buf = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t iova = MOCK_APERTURE_START;
    ioas_map(ioas, buf, iova, 2 * 4096, IOMMU_IOAS_MAP_READABLE);  /* read-only */

    struct pollfd p = {.fd = ffd, .events = POLLIN | POLLOUT};
    CHECK(poll(&p, 1, 0) == 1 && p.revents == POLLOUT, "poll: writable, nothing to read");
    CHECK(dma_copy(iova, iova + 4096 + 8, 16) == 3, "the device writes into the read-only mapping: a DMA fault");
    p.events = POLLIN;
    CHECK(poll(&p, 1, 5000) == 1 && (p.revents & POLLIN), "poll: a fault record waits");

    struct iommu_hwpt_pgfault f[2];
    errno = 0;
    CHECK(read(ffd, f, sizeof f[0] - 1) < 0 && errno == ESPIPE, "a read that is not whole records: ESPIPE");
    CHECK(read(ffd, f, sizeof f) == sizeof f[0], "read one iommu_hwpt_pgfault");
    CHECK(f[0].dev_id == dev_id && f[0].addr == iova + 4096 + 8 && f[0].perm == IOMMU_PGFAULT_PERM_WRITE &&
          (f[0].flags & IOMMU_PGFAULT_FLAGS_LAST_PAGE), "dev_id %u addr %#llx perm WRITE cookie %u",
          f[0].dev_id, (unsigned long long)f[0].addr, f[0].cookie);
    CHECK(read(ffd, f, sizeof f) == 0, "then nothing more");

    struct iommu_hwpt_page_response r = {.cookie = f[0].cookie, .code = IOMMUFD_PAGE_RESP_SUCCESS};
    CHECK(write(ffd, &r, sizeof r) == sizeof r, "write the page response");
    errno = 0;
    CHECK(write(ffd, &r, sizeof r) < 0 && errno == EINVAL, "answering it twice: EINVAL");

    struct iommu_destroy d = {.size = sizeof d, .id = fa.out_fault_id};
    errno = 0;
    CHECK(ioctl(iommufd, IOMMU_DESTROY, &d) < 0 && errno == EBUSY, "the fault queue is busy (its HWPT and fd hold it)");
    printf("done, %d failures\n", failures);
    return 0;
}
