/*
 * Golden FUSE messages, built from the kernel's own structs (<linux/fuse.h>), printed as
 * annotated hex: one field per line, "hex bytes  path = value".
 *
 *   fuse_golden requests   > tests/data/fuse_requests.hex   (kernel -> daemon)
 *   fuse_golden replies    > tests/data/fuse_replies.hex    (daemon -> kernel)
 *
 * tests/unit/fuse/test_golden.py decodes the requests with FuseConnection and checks
 * every annotated field, compares our replies byte for byte, and checks that this program
 * (compiled against build/uapi) still prints exactly the committed files.
 */
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <linux/fuse.h>

#define UID 1000
#define GID 1000
#define PID 4242

static void line(const void *p, size_t n, const char *label)
{
	const unsigned char *b = p;
	char hex[1024];
	size_t k = 0;

	hex[0] = 0;
	for (size_t i = 0; i < n; i++)
		k += (size_t)sprintf(hex + k, i ? " %02x" : "%02x", b[i]);
	printf("%-24s %s\n", hex, label);
}

#define SIGNED(x) _Generic((x), int32_t: 1, int64_t: 1, default: 0)

/* one integer field of a struct */
#define F(path, s, f)                                                            \
	do {                                                                     \
		char l_[160];                                                    \
		if (SIGNED((s).f))                                               \
			snprintf(l_, sizeof(l_), "%s.%s = %lld", path, #f,      \
				 (long long)(s).f);                              \
		else                                                             \
			snprintf(l_, sizeof(l_), "%s.%s = %llu", path, #f,      \
				 (unsigned long long)(s).f);                     \
		line(&(s).f, sizeof((s).f), l_);                                 \
	} while (0)

/* an all-zero array field (unused, spare) */
#define Z(path, s, f)                                                            \
	do {                                                                     \
		char l_[160];                                                    \
		snprintf(l_, sizeof(l_), "%s.%s = bytes(%zu)", path, #f,         \
			 sizeof((s).f));                                         \
		line(&(s).f, sizeof((s).f), l_);                                 \
	} while (0)

/* bytes, annotated as a Python bytes literal; with_nul: a C string and its NUL */
static void bytes(const char *path, const void *p, size_t n, int with_nul)
{
	const unsigned char *b = p;
	char l[512];
	size_t k = (size_t)snprintf(l, sizeof(l), "%s = b\"", path);

	for (size_t i = 0; i < n; i++)
		k += (size_t)(b[i] >= 0x20 && b[i] < 0x7f && b[i] != '"' && b[i] != '\\'
				      ? snprintf(l + k, sizeof(l) - k, "%c", b[i])
				      : snprintf(l + k, sizeof(l) - k, "\\x%02x", b[i]));
	snprintf(l + k, sizeof(l) - k, "\"");
	line(p, n + (with_nul ? 1 : 0), l);
}

static void section(const char *name, const char *what)
{
	printf("\n== %s: %s\n", name, what);
}

static void in_header(uint32_t len, uint32_t opcode, uint64_t unique, uint64_t nodeid,
		      uint16_t total_extlen)
{
	struct fuse_in_header h = {
		.len = len, .opcode = opcode, .unique = unique, .nodeid = nodeid,
		.uid = UID, .gid = GID, .pid = PID, .total_extlen = total_extlen,
	};

	F("header", h, len);
	F("header", h, opcode);
	F("header", h, unique);
	F("header", h, nodeid);
	F("header", h, uid);
	F("header", h, gid);
	F("header", h, pid);
	F("header", h, total_extlen);
	F("header", h, padding);
}

#define HDR sizeof(struct fuse_in_header)

static void read_in(const char *name, uint32_t opcode, uint64_t unique, uint64_t nodeid,
		    struct fuse_read_in r)
{
	(void)name;
	in_header(HDR + sizeof(r), opcode, unique, nodeid, 0);
	F("arg", r, fh);
	F("arg", r, offset);
	F("arg", r, size);
	F("arg", r, read_flags);
	F("arg", r, lock_owner);
	F("arg", r, flags);
	F("arg", r, padding);
}

static void release_in(uint32_t opcode, uint64_t unique, struct fuse_release_in r)
{
	in_header(HDR + sizeof(r), opcode, unique, 3, 0);
	F("arg", r, fh);
	F("arg", r, flags);
	F("arg", r, release_flags);
	F("arg", r, lock_owner);
}

static void fsync_in(uint32_t opcode, uint64_t unique, struct fuse_fsync_in r)
{
	in_header(HDR + sizeof(r), opcode, unique, 3, 0);
	F("arg", r, fh);
	F("arg", r, fsync_flags);
	F("arg", r, padding);
}

static void open_in(uint32_t opcode, uint64_t unique, uint64_t nodeid, struct fuse_open_in r)
{
	in_header(HDR + sizeof(r), opcode, unique, nodeid, 0);
	F("arg", r, flags);
	F("arg", r, open_flags);
}

static void requests(void)
{
	printf("# FUSE requests (kernel -> daemon), made by tests/c/fuse_golden.c from the\n"
	       "# structs of <linux/fuse.h> (protocol 7.%d). One field per line.\n",
	       FUSE_KERNEL_MINOR_VERSION);

	section("init", "FUSE_INIT from a 7.45 kernel (fuse_init_in with flags2)");
	{
		struct fuse_init_in r = {
			.major = 7, .minor = 45, .max_readahead = 131072,
			.flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_HAS_IOCTL_DIR |
				 FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES | FUSE_INIT_EXT,
			.flags2 = (uint32_t)(FUSE_PASSTHROUGH >> 32),
		};
		in_header(HDR + sizeof(r), FUSE_INIT, 2, 0, 0);
		F("arg", r, major);
		F("arg", r, minor);
		F("arg", r, max_readahead);
		F("arg", r, flags);
		F("arg", r, flags2);
		Z("arg", r, unused);
	}

	section("init_7_31", "FUSE_INIT from a 7.31 kernel: fuse_init_in was 16 bytes");
	{
		struct fuse_init_in r = {
			.major = 7, .minor = 31, .max_readahead = 65536,
			.flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES,
		};
		in_header(HDR + 16, FUSE_INIT, 2, 0, 0);
		F("arg", r, major);
		F("arg", r, minor);
		F("arg", r, max_readahead);
		F("arg", r, flags);
	}

	section("lookup", "FUSE_LOOKUP of \"vfio\" in the root");
	in_header(HDR + 5, FUSE_LOOKUP, 4, FUSE_ROOT_ID, 0);
	bytes("name", "vfio", 4, 1);

	section("forget", "FUSE_FORGET: drop 3 lookups of node 9 (no reply)");
	{
		struct fuse_forget_in r = { .nlookup = 3 };
		in_header(HDR + sizeof(r), FUSE_FORGET, 6, 9, 0);
		F("arg", r, nlookup);
	}

	section("batch_forget", "FUSE_BATCH_FORGET of two nodes (no reply)");
	{
		struct fuse_batch_forget_in r = { .count = 2 };
		struct fuse_forget_one a = { .nodeid = 9, .nlookup = 1 };
		struct fuse_forget_one b = { .nodeid = 10, .nlookup = 7 };
		in_header(HDR + sizeof(r) + 2 * sizeof(a), FUSE_BATCH_FORGET, 8, 0, 0);
		F("arg", r, count);
		F("arg", r, dummy);
		F("forgets[0]", a, nodeid);
		F("forgets[0]", a, nlookup);
		F("forgets[1]", b, nodeid);
		F("forgets[1]", b, nlookup);
	}

	section("getattr", "FUSE_GETATTR of an open file (FUSE_GETATTR_FH)");
	{
		struct fuse_getattr_in r = { .getattr_flags = FUSE_GETATTR_FH, .fh = 5 };
		in_header(HDR + sizeof(r), FUSE_GETATTR, 10, 3, 0);
		F("arg", r, getattr_flags);
		F("arg", r, dummy);
		F("arg", r, fh);
	}

	section("setattr", "FUSE_SETATTR: O_TRUNC of an open file");
	{
		struct fuse_setattr_in r = {
			.valid = FATTR_SIZE | FATTR_FH, .fh = 5, .size = 0,
		};
		in_header(HDR + sizeof(r), FUSE_SETATTR, 12, 3, 0);
		F("arg", r, valid);
		F("arg", r, padding);
		F("arg", r, fh);
		F("arg", r, size);
		F("arg", r, lock_owner);
		F("arg", r, atime);
		F("arg", r, mtime);
		F("arg", r, ctime);
		F("arg", r, atimensec);
		F("arg", r, mtimensec);
		F("arg", r, ctimensec);
		F("arg", r, mode);
		F("arg", r, unused4);
		F("arg", r, uid);
		F("arg", r, gid);
		F("arg", r, unused5);
	}

	section("readlink", "FUSE_READLINK (no body)");
	in_header(HDR, FUSE_READLINK, 14, 11, 0);

	section("open", "FUSE_OPEN O_RDWR|O_CLOEXEC");
	open_in(FUSE_OPEN, 16, 3, (struct fuse_open_in){ .flags = O_RDWR | O_CLOEXEC });

	section("read", "FUSE_READ of 4 bytes at 4096");
	read_in("read", FUSE_READ, 18, 3,
		(struct fuse_read_in){ .fh = 5, .offset = 4096, .size = 4, .flags = O_RDWR });

	section("write", "FUSE_WRITE of 4 bytes at 8");
	{
		struct fuse_write_in r = { .fh = 5, .offset = 8, .size = 4, .flags = O_RDWR };
		in_header(HDR + sizeof(r) + 4, FUSE_WRITE, 20, 3, 0);
		F("arg", r, fh);
		F("arg", r, offset);
		F("arg", r, size);
		F("arg", r, write_flags);
		F("arg", r, lock_owner);
		F("arg", r, flags);
		F("arg", r, padding);
		bytes("data", "\x01\x02\x03\x04", 4, 0);
	}

	section("statfs", "FUSE_STATFS (no body)");
	in_header(HDR, FUSE_STATFS, 22, FUSE_ROOT_ID, 0);

	section("release", "FUSE_RELEASE of fh 5 (the last close)");
	release_in(FUSE_RELEASE, 24, (struct fuse_release_in){ .fh = 5, .flags = O_RDWR });

	section("fsync", "FUSE_FSYNC (fdatasync)");
	fsync_in(FUSE_FSYNC, 26, (struct fuse_fsync_in){ .fh = 5, .fsync_flags = 1 });

	section("getxattr", "FUSE_GETXATTR of security.capability, 256 bytes");
	{
		struct fuse_getxattr_in r = { .size = 256 };
		in_header(HDR + sizeof(r) + 20, FUSE_GETXATTR, 28, 3, 0);
		F("arg", r, size);
		F("arg", r, padding);
		bytes("name", "security.capability", 19, 1);
	}

	section("listxattr", "FUSE_LISTXATTR asking for the size (size 0)");
	{
		struct fuse_getxattr_in r = { .size = 0 };
		in_header(HDR + sizeof(r), FUSE_LISTXATTR, 30, 3, 0);
		F("arg", r, size);
		F("arg", r, padding);
	}

	section("flush", "FUSE_FLUSH at close(2)");
	{
		struct fuse_flush_in r = { .fh = 5, .lock_owner = 0x1122334455667788ULL };
		in_header(HDR + sizeof(r), FUSE_FLUSH, 32, 3, 0);
		F("arg", r, fh);
		F("arg", r, unused);
		F("arg", r, padding);
		F("arg", r, lock_owner);
	}

	section("opendir", "FUSE_OPENDIR O_RDONLY|O_DIRECTORY");
	open_in(FUSE_OPENDIR, 34, FUSE_ROOT_ID,
		(struct fuse_open_in){ .flags = O_RDONLY | O_DIRECTORY });

	section("readdir", "FUSE_READDIR from entry 2, 4096 bytes");
	read_in("readdir", FUSE_READDIR, 36, FUSE_ROOT_ID,
		(struct fuse_read_in){ .fh = 9, .offset = 2, .size = 4096 });

	section("releasedir", "FUSE_RELEASEDIR of fh 9");
	release_in(FUSE_RELEASEDIR, 40, (struct fuse_release_in){ .fh = 9 });

	section("fsyncdir", "FUSE_FSYNCDIR");
	fsync_in(FUSE_FSYNCDIR, 42, (struct fuse_fsync_in){ .fh = 9 });

	section("access", "FUSE_ACCESS R_OK|W_OK");
	{
		struct fuse_access_in r = { .mask = 4 | 2 };
		in_header(HDR + sizeof(r), FUSE_ACCESS, 44, 3, 0);
		F("arg", r, mask);
		F("arg", r, padding);
	}

	section("interrupt", "FUSE_INTERRUPT of request 46 (no reply)");
	{
		struct fuse_interrupt_in r = { .unique = 46 };
		in_header(HDR + sizeof(r), FUSE_INTERRUPT, 47, 0, 0);
		F("arg", r, unique);
	}

	section("ioctl", "FUSE_IOCTL VFIO_GET_API_VERSION: _IO(';', 100), no data");
	{
		struct fuse_ioctl_in r = { .fh = 5, .cmd = 0x3b64 };
		in_header(HDR + sizeof(r), FUSE_IOCTL, 48, 3, 0);
		F("arg", r, fh);
		F("arg", r, flags);
		F("arg", r, cmd);
		F("arg", r, arg);
		F("arg", r, in_size);
		F("arg", r, out_size);
	}

	section("ioctl_in_data", "FUSE_IOCTL _IOW('E', 7, int): the kernel copies in_size bytes");
	{
		struct fuse_ioctl_in r = {
			.fh = 5, .cmd = 0x40044507, .arg = 0x7ffc0000a000ULL, .in_size = 4,
		};
		in_header(HDR + sizeof(r) + 4, FUSE_IOCTL, 50, 3, 0);
		F("arg", r, fh);
		F("arg", r, flags);
		F("arg", r, cmd);
		F("arg", r, arg);
		F("arg", r, in_size);
		F("arg", r, out_size);
		bytes("data", "\x2a\x00\x00\x00", 4, 0);
	}

	section("poll", "FUSE_POLL for POLLIN, notify when ready");
	{
		struct fuse_poll_in r = {
			.fh = 5, .kh = 77, .flags = FUSE_POLL_SCHEDULE_NOTIFY, .events = POLLIN,
		};
		in_header(HDR + sizeof(r), FUSE_POLL, 52, 3, 0);
		F("arg", r, fh);
		F("arg", r, kh);
		F("arg", r, flags);
		F("arg", r, events);
	}

	section("destroy", "FUSE_DESTROY (no body)");
	in_header(HDR, FUSE_DESTROY, 54, 0, 0);

	section("unknown", "FUSE_MKDIR with a supplementary-groups extension: not served");
	{
		struct fuse_mkdir_in r = { .mode = 0755, .umask = 022 };
		struct fuse_ext_header e = { .size = 16, .type = FUSE_EXT_GROUPS };
		struct { uint32_t nr_groups; uint32_t group; } g = { 1, 27 };
		in_header(HDR + sizeof(r) + 2 + 16, FUSE_MKDIR, 56, FUSE_ROOT_ID, 2);
		F("body", r, mode);
		F("body", r, umask);
		bytes("body.name", "d", 1, 1);
		F("ext", e, size);
		F("ext", e, type);
		F("ext", g, nr_groups);
		F("ext", g, group);
	}
}

static void out_header(uint32_t len, int32_t error, uint64_t unique)
{
	struct fuse_out_header h = { .len = len, .error = error, .unique = unique };

	F("header", h, len);
	F("header", h, error);
	F("header", h, unique);
}

#define OHDR sizeof(struct fuse_out_header)

static void attr(const char *path, struct fuse_attr a)
{
	F(path, a, ino);
	F(path, a, size);
	F(path, a, blocks);
	F(path, a, atime);
	F(path, a, mtime);
	F(path, a, ctime);
	F(path, a, atimensec);
	F(path, a, mtimensec);
	F(path, a, ctimensec);
	F(path, a, mode);
	F(path, a, nlink);
	F(path, a, uid);
	F(path, a, gid);
	F(path, a, rdev);
	F(path, a, blksize);
	F(path, a, flags);
}

static void init_out(uint64_t unique, struct fuse_init_out o)
{
	out_header(OHDR + sizeof(o), 0, unique);
	F("init", o, major);
	F("init", o, minor);
	F("init", o, max_readahead);
	F("init", o, flags);
	F("init", o, max_background);
	F("init", o, congestion_threshold);
	F("init", o, max_write);
	F("init", o, time_gran);
	F("init", o, max_pages);
	F("init", o, map_alignment);
	F("init", o, flags2);
	F("init", o, max_stack_depth);
	F("init", o, request_timeout);
	Z("init", o, unused);
}

static void dirent(uint64_t ino, uint64_t off, uint32_t type, const char *name)
{
	struct fuse_dirent d = {
		.ino = ino, .off = off, .namelen = (uint32_t)strlen(name), .type = type,
	};
	static const char zeros[8];
	size_t pad = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + d.namelen) -
		     (FUSE_NAME_OFFSET + d.namelen);

	F("dirent", d, ino);
	F("dirent", d, off);
	F("dirent", d, namelen);
	F("dirent", d, type);
	bytes("dirent.name", name, d.namelen, 0);
	if (pad)
		line(zeros, pad, "(padding to 8 bytes)");
}

static void replies(void)
{
	const uint64_t want = FUSE_BIG_WRITES | FUSE_HAS_IOCTL_DIR | FUSE_PARALLEL_DIROPS |
			      FUSE_MAX_PAGES | FUSE_INIT_EXT;

	printf("# FUSE replies (daemon -> kernel), made by tests/c/fuse_golden.c from the\n"
	       "# structs of <linux/fuse.h> (protocol 7.%d). One field per line.\n",
	       FUSE_KERNEL_MINOR_VERSION);

	section("init", "INIT reply to the 7.45 kernel of fuse_requests.hex");
	init_out(2, (struct fuse_init_out){
		.major = 7, .minor = 45, .max_readahead = 131072,
		.flags = (uint32_t)((FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_HAS_IOCTL_DIR |
				     FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES | FUSE_INIT_EXT) & want),
		.max_background = 64, .congestion_threshold = 48, .max_write = 1048576,
		.time_gran = 1, .max_pages = 256,
	});

	section("init_7_31", "INIT reply to the 7.31 kernel: minor 31, no flags2");
	init_out(2, (struct fuse_init_out){
		.major = 7, .minor = 31, .max_readahead = 65536,
		.flags = (uint32_t)((FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES) & want),
		.max_background = 64, .congestion_threshold = 48, .max_write = 1048576,
		.time_gran = 1, .max_pages = 256,
	});

	section("entry", "LOOKUP reply: fuse_entry_out for a directory");
	{
		struct fuse_entry_out e = { .nodeid = 2, .entry_valid = 1, .attr_valid = 1 };
		struct fuse_attr a = {
			.ino = 2, .atime = 1700000000, .mtime = 1700000000, .ctime = 1700000000,
			.mode = S_IFDIR | 0755, .nlink = 2, .blksize = 4096,
		};
		out_header(OHDR + sizeof(e), 0, 4);
		F("entry", e, nodeid);
		F("entry", e, generation);
		F("entry", e, entry_valid);
		F("entry", e, attr_valid);
		F("entry", e, entry_valid_nsec);
		F("entry", e, attr_valid_nsec);
		attr("entry.attr", a);
	}

	section("attr", "GETATTR reply: fuse_attr_out for a regular file");
	{
		struct fuse_attr_out o = { .attr_valid = 1 };
		struct fuse_attr a = {
			.ino = 3, .size = 4096, .atime = 1700000000, .mtime = 1700000000,
			.ctime = 1700000000, .mode = S_IFREG | 0600, .nlink = 1, .uid = 1000,
			.gid = 1000, .blksize = 4096,
		};
		out_header(OHDR + sizeof(o), 0, 10);
		F("attr_out", o, attr_valid);
		F("attr_out", o, attr_valid_nsec);
		F("attr_out", o, dummy);
		attr("attr_out.attr", a);
	}

	section("open", "OPEN reply: fh 5, FOPEN_DIRECT_IO|FOPEN_NOFLUSH");
	{
		struct fuse_open_out o = { .fh = 5, .open_flags = FOPEN_DIRECT_IO | FOPEN_NOFLUSH };
		out_header(OHDR + sizeof(o), 0, 16);
		F("open", o, fh);
		F("open", o, open_flags);
		F("open", o, backing_id);
	}

	section("read", "READ reply: the 4 bytes read");
	out_header(OHDR + 4, 0, 18);
	bytes("data", "abcd", 4, 0);

	section("write", "WRITE reply: 4 bytes written");
	{
		struct fuse_write_out o = { .size = 4 };
		out_header(OHDR + sizeof(o), 0, 20);
		F("write", o, size);
		F("write", o, padding);
	}

	section("statfs", "STATFS reply");
	{
		struct fuse_statfs_out o = { .st = { .bsize = 4096, .namelen = 255, .frsize = 4096 } };
		out_header(OHDR + sizeof(o), 0, 22);
		F("st", o.st, blocks);
		F("st", o.st, bfree);
		F("st", o.st, bavail);
		F("st", o.st, files);
		F("st", o.st, ffree);
		F("st", o.st, bsize);
		F("st", o.st, namelen);
		F("st", o.st, frsize);
		F("st", o.st, padding);
		Z("st", o.st, spare);
	}

	section("empty", "RELEASE reply: success, no body");
	out_header(OHDR, 0, 24);

	section("getxattr_size", "LISTXATTR reply to size 0: the size needed");
	{
		struct fuse_getxattr_out o = { .size = 0 };
		out_header(OHDR + sizeof(o), 0, 30);
		F("xattr", o, size);
		F("xattr", o, padding);
	}

	section("readdir", "READDIR reply: \".\", \"..\" and \"vfio\"");
	out_header(OHDR + 24 + 8 + 24 + 8 + 24 + 8, 0, 36);
	dirent(1, 1, S_IFDIR >> 12, ".");
	dirent(1, 2, S_IFDIR >> 12, "..");
	dirent(2, 3, S_IFDIR >> 12, "vfio");

	section("readlink", "READLINK reply: the target, no NUL");
	out_header(OHDR + 21, 0, 14);
	bytes("data", "../../../devices/vfio", 21, 0);

	section("ioctl", "IOCTL reply: result 0, no retry, no iovecs");
	{
		struct fuse_ioctl_out o = { .result = 0 };
		out_header(OHDR + sizeof(o), 0, 48);
		F("ioctl", o, result);
		F("ioctl", o, flags);
		F("ioctl", o, in_iovs);
		F("ioctl", o, out_iovs);
	}

	section("ioctl_negative", "IOCTL reply: a negative result is still a success reply");
	{
		struct fuse_ioctl_out o = { .result = -1 };
		out_header(OHDR + sizeof(o), 0, 50);
		F("ioctl", o, result);
		F("ioctl", o, flags);
		F("ioctl", o, in_iovs);
		F("ioctl", o, out_iovs);
	}

	section("poll", "POLL reply: POLLIN|POLLRDNORM");
	{
		struct fuse_poll_out o = { .revents = POLLIN | POLLRDNORM };
		out_header(OHDR + sizeof(o), 0, 52);
		F("poll", o, revents);
		F("poll", o, padding);
	}

	section("error", "an error reply: -ENOENT, header only");
	out_header(OHDR, -2, 4);

	section("notify_poll", "FUSE_NOTIFY_POLL: unique 0, error = the notify code");
	{
		struct fuse_notify_poll_wakeup_out o = { .kh = 77 };
		out_header(OHDR + sizeof(o), FUSE_NOTIFY_POLL, 0);
		F("notify", o, kh);
	}
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "requests"))
		requests();
	else if (argc == 2 && !strcmp(argv[1], "replies"))
		replies();
	else {
		fprintf(stderr, "usage: %s requests|replies\n", argv[0]);
		return 2;
	}
	return 0;
}
