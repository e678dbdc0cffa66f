/* Nested translation on the mock IOMMU: a nesting-parent HWPT (stage 2) over an IOAS,
 * a vIOMMU on it, a vDEVICE naming the device, a nested HWPT (stage 1) allocated from
 * the vIOMMU, the memcpy device attached to it through its VFIO cdev and doing DMA, a
 * stage-1 cache invalidation (with the kernel's partial progress), and a vEVENTQ event
 * read after poll.
 *
 *   gcc -o iommufd_nested examples/iommufd_nested.c
 *   vfiofs run --config examples/iommufd_mock.toml -- ./iommufd_nested
 */
#include "iommufd_common.h"

#include <poll.h>
#include <sys/mman.h>

static int test_cmd(struct iommu_test_cmd *c) { c->size = sizeof *c; return ioctl(iommufd, IOMMU_TEST_CMD, c); }

int main(void) {
    uint32_t dev_id = open_bound("vfio0");

    struct iommu_test_hw_info hw = {0};
    struct iommu_hw_info info = {.size = sizeof info, .dev_id = dev_id, .data_len = sizeof hw, .data_uptr = (uintptr_t)&hw};
    CHECK(ioctl(iommufd, IOMMU_GET_HW_INFO, &info) == 0 && info.out_data_type == IOMMU_HW_INFO_TYPE_SELFTEST &&
          hw.test_reg == IOMMU_HW_INFO_SELFTEST_REGVAL, "IOMMU_GET_HW_INFO: the mock IOMMU (type %#x, reg %#x)",
          info.out_data_type, hw.test_reg);

    uint32_t ioas = ioas_alloc();
    struct iommu_hwpt_alloc parent = {.size = sizeof parent, .flags = IOMMU_HWPT_ALLOC_NEST_PARENT, .dev_id = dev_id, .pt_id = ioas};
    CHECK(ioctl(iommufd, IOMMU_HWPT_ALLOC, &parent) == 0, "IOMMU_HWPT_ALLOC NEST_PARENT: hwpt %u", parent.out_hwpt_id);

    struct iommu_viommu_alloc viommu = {.size = sizeof viommu, .type = IOMMU_VIOMMU_TYPE_SELFTEST, .dev_id = dev_id,
                                        .hwpt_id = parent.out_hwpt_id};
    CHECK(ioctl(iommufd, IOMMU_VIOMMU_ALLOC, &viommu) == 0, "IOMMU_VIOMMU_ALLOC: viommu %u", viommu.out_viommu_id);
    struct iommu_vdevice_alloc vdev = {.size = sizeof vdev, .viommu_id = viommu.out_viommu_id, .dev_id = dev_id, .virt_id = 0x1234};
    CHECK(ioctl(iommufd, IOMMU_VDEVICE_ALLOC, &vdev) == 0, "IOMMU_VDEVICE_ALLOC: virt_id 0x1234 -> vdevice %u", vdev.out_vdevice_id);
    errno = 0;
    CHECK(ioctl(iommufd, IOMMU_VDEVICE_ALLOC, &vdev) < 0 && errno == EEXIST, "a second vDEVICE for the device: EEXIST");

    struct iommu_hwpt_selftest s1 = {.iotlb = IOMMU_TEST_IOTLB_DEFAULT};
    struct iommu_hwpt_alloc nested = {.size = sizeof nested, .dev_id = dev_id, .pt_id = viommu.out_viommu_id,
                                      .data_type = IOMMU_HWPT_DATA_SELFTEST, .data_len = sizeof s1, .data_uptr = (uintptr_t)&s1};
    CHECK(ioctl(iommufd, IOMMU_HWPT_ALLOC, &nested) == 0, "IOMMU_HWPT_ALLOC from the vIOMMU: nested hwpt %u", nested.out_hwpt_id);
    attach(nested.out_hwpt_id);

    /* stage 2 maps guest memory; the device's DMA goes through stage 1 then stage 2 */
    size_t len = 4096;
    char *src = mmap(NULL, 2 * len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *dst = src + len;
    for (size_t i = 0; i < len; i++) src[i] = (char)(i * 13 + 5);
    uint64_t iova = MOCK_APERTURE_START;
    ioas_map(ioas, src, iova, 2 * len, IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE);
    CHECK(dma_copy(iova, iova + len, len) == 2 && !memcmp(src, dst, len), "DMA through the nested HWPT: the bytes arrived");
    CHECK(dma_copy(iova, iova + 0x100000, 16) == 3, "DMA to an IOVA stage 2 does not map: a fault");

    /* invalidate mock IOTLB entries 1 and 3; entry 7 does not exist: EINVAL after 2 */
    struct iommu_hwpt_invalidate_selftest inv[3] = {{.iotlb_id = 1}, {.iotlb_id = 3}, {.iotlb_id = 7}};
    struct iommu_hwpt_invalidate ci = {.size = sizeof ci, .hwpt_id = nested.out_hwpt_id, .data_uptr = (uintptr_t)inv,
                                       .data_type = IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, .entry_len = sizeof inv[0], .entry_num = 3};
    errno = 0;
    CHECK(ioctl(iommufd, IOMMU_HWPT_INVALIDATE, &ci) < 0 && errno == EINVAL && ci.entry_num == 2,
          "IOMMU_HWPT_INVALIDATE: 2 of 3 entries done, then EINVAL");
    struct iommu_test_cmd chk = {.op = IOMMU_TEST_OP_MD_CHECK_IOTLB, .id = nested.out_hwpt_id};
    chk.check_iotlb.id = 1; chk.check_iotlb.iotlb = 0;
    int r1 = test_cmd(&chk);
    chk.check_iotlb.id = 0; chk.check_iotlb.iotlb = IOMMU_TEST_IOTLB_DEFAULT;
    CHECK(r1 == 0 && test_cmd(&chk) == 0, "mock IOTLB: entry 1 invalidated, entry 0 untouched");

    /* events: a vEVENTQ, and a mock device on the same vIOMMU that raises one */
    struct iommu_veventq_alloc q = {.size = sizeof q, .viommu_id = viommu.out_viommu_id, .type = IOMMU_VEVENTQ_TYPE_SELFTEST,
                                    .veventq_depth = 4};
    CHECK(ioctl(iommufd, IOMMU_VEVENTQ_ALLOC, &q) == 0 && q.out_veventq_fd > 2, "IOMMU_VEVENTQ_ALLOC: fd %u", q.out_veventq_fd);
    struct pollfd p = {.fd = (int)q.out_veventq_fd, .events = POLLIN};
    CHECK(poll(&p, 1, 0) == 0, "vEVENTQ empty: poll says nothing to read");
    struct iommu_test_cmd md = {.op = IOMMU_TEST_OP_MOCK_DOMAIN, .id = ioas};
    CHECK(test_cmd(&md) == 0, "IOMMU_TEST_OP_MOCK_DOMAIN: mock device %u", md.mock_domain.out_idev_id);
    struct iommu_vdevice_alloc mvdev = {.size = sizeof mvdev, .viommu_id = viommu.out_viommu_id,
                                        .dev_id = md.mock_domain.out_idev_id, .virt_id = 0x99};
    CHECK(ioctl(iommufd, IOMMU_VDEVICE_ALLOC, &mvdev) == 0, "its vDEVICE: virt_id 0x99");
    struct iommu_test_cmd tv = {.op = IOMMU_TEST_OP_TRIGGER_VEVENT};
    tv.trigger_vevent.dev_id = md.mock_domain.out_idev_id;
    CHECK(test_cmd(&tv) == 0, "IOMMU_TEST_OP_TRIGGER_VEVENT");
    CHECK(poll(&p, 1, 5000) == 1 && (p.revents & POLLIN), "poll: POLLIN");
    struct { struct iommufd_vevent_header hdr; struct iommu_viommu_event_selftest ev; } e;
    CHECK(read(p.fd, &e, sizeof e) == sizeof e && e.hdr.flags == 0 && e.hdr.sequence == 0 && e.ev.virt_id == 0x99,
          "read the vEVENT: sequence %u, virt_id %#x", e.hdr.sequence, e.ev.virt_id);
    CHECK(read(p.fd, &e, sizeof e) == 0, "then the queue is empty");

    struct iommu_destroy d = {.size = sizeof d, .id = q.out_veventq_id};
    errno = 0;
    CHECK(ioctl(iommufd, IOMMU_DESTROY, &d) < 0 && errno == EBUSY, "the vEVENTQ is busy while its fd is open");
    close(p.fd);
    printf("done, %d failures\n", failures);
    return 0;
}
