/* The client for `make bench`: times N calls of one operation on PATH.
 * usage: client PATH noop|copy64|pread4 N   -> prints ns per call */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define BENCH_NOOP _IO('E', 0)
#define BENCH_STRUCT _IO('E', 1)

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror("open"); return 1; }
    long n = atol(argv[3]);
    unsigned char buf[64] = {0};
    char small[4];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        long r;
        if (!strcmp(argv[2], "noop")) r = ioctl(fd, BENCH_NOOP, 0);
        else if (!strcmp(argv[2], "copy64")) r = ioctl(fd, BENCH_STRUCT, buf) - 42;
        else r = pread(fd, small, 4, 0) - 4;
        if (r != 0) { perror(argv[2]); return 1; }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
    printf("%.0f\n", ns / n);
    return 0;
}
