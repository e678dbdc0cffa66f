/* IOMMU_TEST_CMD ops that create or take fds, under `vfiofs run`: CREATE_ACCESS (the
 * access fd lands in out_access_fd), ACCESS_RW / ACCESS_PAGES through that fd,
 * DMABUF_GET (the fd is the return value), IOAS_MAP_FILE of the dma-buf and
 * DMABUF_REVOKE. Prints "ok ..." lines; exits 1 at the first failure. */
#include "../../examples/iommufd_common.h"

#include <sys/mman.h>

enum { OP_ADD_RESERVED = 1, OP_CREATE_ACCESS = 5, OP_DESTROY_ACCESS_PAGES = 6, OP_ACCESS_PAGES = 7,
       OP_ACCESS_RW = 8, OP_DMABUF_GET = 22, OP_DMABUF_REVOKE = 23 };

struct test_cmd {
    __u32 size, op, id, __reserved;
    union {
        struct { __u32 out_access_fd, flags; } create_access;
        struct { __u32 access_pages_id; } destroy_access_pages;
        struct { __u32 flags, out_access_pages_id; __aligned_u64 iova, length, uptr; } access_pages;
        struct { __aligned_u64 iova, length, uptr; __u32 flags; } access_rw;
        struct { __u32 length, open_flags; } dmabuf_get;
        struct { __s32 dmabuf_fd; __u32 revoked; } dmabuf_revoke;
        __u8 pad[48];
    };
    __u32 last;
};

static int test(struct test_cmd *c) { c->size = sizeof *c; return ioctl(iommufd, IOMMU_TEST_CMD, c); }

int main(void) {
    iommufd = open("/dev/iommu", O_RDWR);
    CHECK(iommufd >= 0, "open /dev/iommu");
    uint32_t ioas = ioas_alloc();
    char *buf = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ioas_map(ioas, buf, 0x100000, 8192, IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE);

    struct test_cmd c = {.op = OP_CREATE_ACCESS, .id = ioas};
    c.create_access.flags = 1; /* NEEDS_PIN_PAGES */
    CHECK(test(&c) == 0 && c.create_access.out_access_fd > 2, "CREATE_ACCESS: access fd %u", c.create_access.out_access_fd);
    int access = (int)c.create_access.out_access_fd;
    CHECK(fcntl(access, F_GETFD) == FD_CLOEXEC, "the access fd is close-on-exec");

    const char msg[] = "written by ACCESS_RW";
    c = (struct test_cmd){.op = OP_ACCESS_RW, .id = (__u32)access};
    c.access_rw.iova = 0x100010; c.access_rw.length = sizeof msg; c.access_rw.uptr = (uintptr_t)msg; c.access_rw.flags = 1;
    CHECK(test(&c) == 0 && !memcmp(buf + 0x10, msg, sizeof msg), "ACCESS_RW write through the access fd");
    c = (struct test_cmd){.op = OP_ACCESS_PAGES, .id = (__u32)access};
    c.access_pages.iova = 0x100000; c.access_pages.length = 4096; c.access_pages.uptr = (uintptr_t)buf;
    CHECK(test(&c) == 0, "ACCESS_PAGES pins page 0 (item %u)", c.access_pages.out_access_pages_id);
    c = (struct test_cmd){.op = OP_ACCESS_RW, .id = 0};
    c.access_rw.iova = 0x100000; c.access_rw.length = 4; c.access_rw.uptr = (uintptr_t)buf;
    errno = 0;
    CHECK(test(&c) < 0 && errno == EBADFD, "ACCESS_RW on fd 0 (not an access): EBADFD");
    c.id = 999;
    errno = 0;
    CHECK(test(&c) < 0 && errno == EBADFD, "ACCESS_RW on a closed fd: EBADFD, as iommufd_access_get");

    c = (struct test_cmd){.op = OP_DMABUF_GET};
    c.dmabuf_get.length = 4096; c.dmabuf_get.open_flags = O_CLOEXEC;
    int dmabuf = test(&c);
    CHECK(dmabuf > 2 && dmabuf != access, "DMABUF_GET: dma-buf fd %d", dmabuf);
    struct iommu_ioas_map_file mf = {.size = sizeof mf, .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE,
                                     .ioas_id = ioas, .fd = dmabuf, .start = 0, .length = 4096, .iova = 0x200000};
    CHECK(ioctl(iommufd, IOMMU_IOAS_MAP_FILE, &mf) == 0, "IOAS_MAP_FILE of the dma-buf at 0x200000");
    c = (struct test_cmd){.op = OP_DMABUF_REVOKE};
    c.dmabuf_revoke.dmabuf_fd = dmabuf; c.dmabuf_revoke.revoked = 1;
    CHECK(test(&c) == 0, "DMABUF_REVOKE");
    c.dmabuf_revoke.dmabuf_fd = access;
    errno = 0;
    CHECK(test(&c) < 0 && errno == EBADFD, "DMABUF_REVOKE of a non-dma-buf fd: EBADFD");

    close(access);
    printf("done, %d failures\n", failures);
    return 0;
}
