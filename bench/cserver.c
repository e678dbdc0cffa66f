/* The baseline for `make bench`: a minimal C server on libfuse3's low-level API serving
 * the same operations as bench/benchfs.py (a no-op ioctl, ioctls copying 64 or 32 bytes
 * in and out of the caller's memory or 32 bytes in, a 4-byte pread). Single-threaded, or
 * libfuse's multi-threaded loop with -mt (cserver [-mt] MOUNTPOINT).
 * build: gcc -O2 cserver.c $(pkg-config --cflags --libs fuse3) */
#define FUSE_USE_VERSION 34
#define _GNU_SOURCE
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>

#define BENCH_NOOP _IO('E', 0)
#define BENCH_STRUCT _IO('E', 1)
#define BENCH_STRUCT32 _IO('E', 2)
#define BENCH_IN32 _IO('E', 3)

static void fill(struct stat *st, fuse_ino_t ino) {
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_mode = ino == 1 ? S_IFDIR | 0755 : S_IFREG | 0666;
    st->st_nlink = ino == 1 ? 2 : 1;
    st->st_size = 4;
}

static void b_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
    if (parent != 1 || strcmp(name, "bench")) { fuse_reply_err(req, ENOENT); return; }
    struct fuse_entry_param e = {.ino = 2, .attr_timeout = 1, .entry_timeout = 1};
    fill(&e.attr, 2);
    fuse_reply_entry(req, &e);
}

static void b_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    (void)fi;
    struct stat st;
    fill(&st, ino);
    fuse_reply_attr(req, &st, 1);
}

static void b_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    (void)ino;
    fi->direct_io = 1;
    fuse_reply_open(req, fi);
}

static void b_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)ino; (void)off; (void)fi;
    fuse_reply_buf(req, "abcd", size < 4 ? size : 4);
}

static void b_ioctl(fuse_req_t req, fuse_ino_t ino, int cmd, void *arg,
                    struct fuse_file_info *fi, unsigned flags, const void *in_buf,
                    size_t in_bufsz, size_t out_bufsz) {
    (void)ino; (void)fi; (void)flags; (void)in_buf; (void)in_bufsz; (void)out_bufsz;
    if ((unsigned)cmd == BENCH_NOOP) { fuse_reply_ioctl(req, 0, NULL, 0); return; }
    if ((unsigned)cmd == BENCH_STRUCT || (unsigned)cmd == BENCH_STRUCT32 || (unsigned)cmd == BENCH_IN32) {
        unsigned char buf[64];
        size_t len = (unsigned)cmd == BENCH_STRUCT ? 64 : 32;
        pid_t pid = fuse_req_ctx(req)->pid;
        struct iovec local = {buf, len}, remote = {arg, len};
        if (process_vm_readv(pid, &local, 1, &remote, 1, 0) != (ssize_t)len) { fuse_reply_err(req, EFAULT); return; }
        if ((unsigned)cmd != BENCH_IN32) {
            for (size_t i = 0; i < len; i++) buf[i]++;
            if (process_vm_writev(pid, &local, 1, &remote, 1, 0) != (ssize_t)len) { fuse_reply_err(req, EFAULT); return; }
        }
        fuse_reply_ioctl(req, (unsigned)cmd == BENCH_STRUCT ? 42 : 0, NULL, 0);
        return;
    }
    fuse_reply_err(req, ENOTTY);
}

static const struct fuse_lowlevel_ops ops = {
    .lookup = b_lookup, .getattr = b_getattr, .open = b_open, .read = b_read, .ioctl = b_ioctl,
};

int main(int argc, char **argv) {
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    fuse_opt_add_arg(&args, argv[0]);
    int mt = argc > 2 && !strcmp(argv[1], "-mt");
    if (argc < 2 + mt) { fprintf(stderr, "usage: cserver [-mt] MOUNTPOINT\n"); return 2; }
    struct fuse_session *se = fuse_session_new(&args, &ops, sizeof ops, NULL);
    if (!se || fuse_session_mount(se, argv[1 + mt])) return 1;
    fuse_set_signal_handlers(se);
    struct fuse_loop_config cfg = {.clone_fd = 0, .max_idle_threads = 10};
    int rc = mt ? fuse_session_loop_mt(se, &cfg) : fuse_session_loop(se);
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    return rc;
}
