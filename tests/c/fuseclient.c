/* A C client for the FUSE server tests (tests/mount/echofs.py).
 * usage: fuseclient CMD PATH   -- prints one line of results per check. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define ECHO_NOOP _IO('E', 0)
#define ECHO_STRUCT _IO('E', 1)
#define ECHO_FD _IO('E', 2)
#define ECHO_WAIT _IO('E', 3)
#define ECHO_SERIAL _IO('E', 4)

static void on_alarm(int sig) { (void)sig; }

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *cmd = argv[1], *path = argv[2];
    int fd = open(path, O_RDWR);
    if (fd < 0) { printf("open %s\n", strerror(errno)); return 1; }
    if (!strcmp(cmd, "struct")) {
        unsigned char buf[64];
        for (int i = 0; i < 64; i++) buf[i] = i;
        int r = ioctl(fd, ECHO_STRUCT, buf);
        int ok = 1;
        for (int i = 0; i < 64; i++) ok &= buf[i] == i + 1;
        printf("ret=%d ok=%d\n", r, ok);
    } else if (!strcmp(cmd, "efault")) {
        int r = ioctl(fd, ECHO_STRUCT, (void *)16);
        printf("ret=%d errno=%s\n", r, strerrorname_np(errno));
    } else if (!strcmp(cmd, "enotty")) {
        int r = ioctl(fd, _IO('E', 99), 0);
        printf("ret=%d errno=%s\n", r, strerrorname_np(errno));
    } else if (!strcmp(cmd, "fdpass")) {
        int other = open(path, O_RDWR);
        int mine = ioctl(fd, ECHO_SERIAL, 0), theirs = ioctl(other, ECHO_SERIAL, 0);
        int r = ioctl(fd, ECHO_FD, &other);
        int ev = eventfd(0, 0);
        int r2 = ioctl(fd, ECHO_FD, &ev);
        unsigned long long count = 0;
        read(ev, &count, sizeof count);
        int bad = 1000;
        int r3 = ioctl(fd, ECHO_FD, &bad);
        int e3 = errno;
        printf("mine=%d theirs=%d resolved=%d eventfd=%d count=%llu badfd=%d %s\n",
               mine, theirs, r, r2, count, r3, strerrorname_np(e3));
    } else if (!strcmp(cmd, "eintr")) {
        struct sigaction sa = {0};
        sa.sa_handler = on_alarm; /* no SA_RESTART: the syscall must fail with EINTR */
        sigaction(SIGALRM, &sa, NULL);
        alarm(1);
        char c;
        ssize_t n = read(fd, &c, 1);
        int e = errno;
        int r = ioctl(fd, ECHO_NOOP, 0); /* the daemon still serves us */
        printf("read=%zd errno=%s next=%d\n", n, strerrorname_np(e), r);
    } else if (!strcmp(cmd, "bench")) {
        long n = atol(argv[3]);
        for (long i = 0; i < n; i++) ioctl(fd, ECHO_NOOP, 0);
        printf("done\n");
    }
    return 0;
}
