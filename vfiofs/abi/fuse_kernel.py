"""include/uapi/linux/fuse.h (protocol 7.45, Linux 6.18): the subset vfiofs speaks.

FUSE messages are decoded on every request, so these structs are `CTuple`s (tuples built
straight from ``struct.unpack_from``), which cost a fraction of a validated class. Field
names are the C names. tests/unit/abi checks every size and offset against the uapi
header.
"""

from __future__ import annotations

import enum
from typing import Final

from ._cstruct import CTuple

FUSE_KERNEL_VERSION: Final = 7
FUSE_KERNEL_MINOR_VERSION: Final = 45  # what this file transcribes
FUSE_MIN_MINOR: Final = 31  # the oldest minor vfiofs accepts
FUSE_ROOT_ID: Final = 1
FUSE_MIN_READ_BUFFER: Final = 8192
FUSE_COMPAT_22_INIT_OUT_SIZE: Final = 24
FUSE_COMPAT_INIT_IN_SIZE: Final = 16  # before 7.36 (no flags2)


class FuseOpcode(enum.IntEnum):
    FUSE_LOOKUP = 1
    FUSE_FORGET = 2
    FUSE_GETATTR = 3
    FUSE_SETATTR = 4
    FUSE_READLINK = 5
    FUSE_SYMLINK = 6
    FUSE_MKNOD = 8
    FUSE_MKDIR = 9
    FUSE_UNLINK = 10
    FUSE_RMDIR = 11
    FUSE_RENAME = 12
    FUSE_LINK = 13
    FUSE_OPEN = 14
    FUSE_READ = 15
    FUSE_WRITE = 16
    FUSE_STATFS = 17
    FUSE_RELEASE = 18
    FUSE_FSYNC = 20
    FUSE_SETXATTR = 21
    FUSE_GETXATTR = 22
    FUSE_LISTXATTR = 23
    FUSE_REMOVEXATTR = 24
    FUSE_FLUSH = 25
    FUSE_INIT = 26
    FUSE_OPENDIR = 27
    FUSE_READDIR = 28
    FUSE_RELEASEDIR = 29
    FUSE_FSYNCDIR = 30
    FUSE_GETLK = 31
    FUSE_SETLK = 32
    FUSE_SETLKW = 33
    FUSE_ACCESS = 34
    FUSE_CREATE = 35
    FUSE_INTERRUPT = 36
    FUSE_BMAP = 37
    FUSE_DESTROY = 38
    FUSE_IOCTL = 39
    FUSE_POLL = 40
    FUSE_NOTIFY_REPLY = 41
    FUSE_BATCH_FORGET = 42
    FUSE_FALLOCATE = 43
    FUSE_READDIRPLUS = 44
    FUSE_RENAME2 = 45
    FUSE_LSEEK = 46
    FUSE_COPY_FILE_RANGE = 47
    FUSE_SETUPMAPPING = 48
    FUSE_REMOVEMAPPING = 49
    FUSE_SYNCFS = 50
    FUSE_TMPFILE = 51
    FUSE_STATX = 52
    FUSE_COPY_FILE_RANGE_64 = 53
    CUSE_INIT = 4096


class FuseNotifyCode(enum.IntEnum):
    FUSE_NOTIFY_POLL = 1
    FUSE_NOTIFY_INVAL_INODE = 2
    FUSE_NOTIFY_INVAL_ENTRY = 3
    FUSE_NOTIFY_STORE = 4
    FUSE_NOTIFY_RETRIEVE = 5
    FUSE_NOTIFY_DELETE = 6


class FuseInitFlags(enum.IntFlag):
    """``fuse_init_in.flags`` / ``flags2 << 32`` (FUSE_INIT_EXT)."""

    FUSE_ASYNC_READ = 1 << 0
    FUSE_POSIX_LOCKS = 1 << 1
    FUSE_FILE_OPS = 1 << 2
    FUSE_ATOMIC_O_TRUNC = 1 << 3
    FUSE_EXPORT_SUPPORT = 1 << 4
    FUSE_BIG_WRITES = 1 << 5
    FUSE_DONT_MASK = 1 << 6
    FUSE_SPLICE_WRITE = 1 << 7
    FUSE_SPLICE_MOVE = 1 << 8
    FUSE_SPLICE_READ = 1 << 9
    FUSE_FLOCK_LOCKS = 1 << 10
    FUSE_HAS_IOCTL_DIR = 1 << 11
    FUSE_AUTO_INVAL_DATA = 1 << 12
    FUSE_DO_READDIRPLUS = 1 << 13
    FUSE_READDIRPLUS_AUTO = 1 << 14
    FUSE_ASYNC_DIO = 1 << 15
    FUSE_WRITEBACK_CACHE = 1 << 16
    FUSE_NO_OPEN_SUPPORT = 1 << 17
    FUSE_PARALLEL_DIROPS = 1 << 18
    FUSE_HANDLE_KILLPRIV = 1 << 19
    FUSE_POSIX_ACL = 1 << 20
    FUSE_ABORT_ERROR = 1 << 21
    FUSE_MAX_PAGES = 1 << 22
    FUSE_CACHE_SYMLINKS = 1 << 23
    FUSE_NO_OPENDIR_SUPPORT = 1 << 24
    FUSE_EXPLICIT_INVAL_DATA = 1 << 25
    FUSE_MAP_ALIGNMENT = 1 << 26
    FUSE_SUBMOUNTS = 1 << 27
    FUSE_HANDLE_KILLPRIV_V2 = 1 << 28
    FUSE_SETXATTR_EXT = 1 << 29
    FUSE_INIT_EXT = 1 << 30
    FUSE_INIT_RESERVED = 1 << 31
    FUSE_SECURITY_CTX = 1 << 32
    FUSE_HAS_INODE_DAX = 1 << 33
    FUSE_CREATE_SUPP_GROUP = 1 << 34
    FUSE_HAS_EXPIRE_ONLY = 1 << 35
    FUSE_DIRECT_IO_ALLOW_MMAP = 1 << 36
    FUSE_PASSTHROUGH = 1 << 37
    FUSE_NO_EXPORT_SUPPORT = 1 << 38
    FUSE_HAS_RESEND = 1 << 39
    FUSE_ALLOW_IDMAP = 1 << 40
    FUSE_OVER_IO_URING = 1 << 41
    FUSE_REQUEST_TIMEOUT = 1 << 42


class FopenFlags(enum.IntFlag):
    FOPEN_DIRECT_IO = 1 << 0
    FOPEN_KEEP_CACHE = 1 << 1
    FOPEN_NONSEEKABLE = 1 << 2
    FOPEN_CACHE_DIR = 1 << 3
    FOPEN_STREAM = 1 << 4
    FOPEN_NOFLUSH = 1 << 5
    FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6
    FOPEN_PASSTHROUGH = 1 << 7


class FuseIoctlFlags(enum.IntFlag):
    FUSE_IOCTL_COMPAT = 1 << 0
    FUSE_IOCTL_UNRESTRICTED = 1 << 1
    FUSE_IOCTL_RETRY = 1 << 2
    FUSE_IOCTL_32BIT = 1 << 3
    FUSE_IOCTL_DIR = 1 << 4
    FUSE_IOCTL_COMPAT_X32 = 1 << 5


FUSE_POLL_SCHEDULE_NOTIFY: Final = 1 << 0
FUSE_GETATTR_FH: Final = 1 << 0
FUSE_READ_LOCKOWNER: Final = 1 << 1
FUSE_RELEASE_FLUSH: Final = 1 << 0

# fuse_setattr_in.valid
FATTR_MODE: Final = 1 << 0
FATTR_UID: Final = 1 << 1
FATTR_GID: Final = 1 << 2
FATTR_SIZE: Final = 1 << 3
FATTR_ATIME: Final = 1 << 4
FATTR_MTIME: Final = 1 << 5
FATTR_FH: Final = 1 << 6
FATTR_ATIME_NOW: Final = 1 << 7
FATTR_MTIME_NOW: Final = 1 << 8
FATTR_LOCKOWNER: Final = 1 << 9
FATTR_CTIME: Final = 1 << 10
FATTR_KILL_SUIDGID: Final = 1 << 11


class FuseInHeader(CTuple, fmt="IIQQIIIHH"):
    len: int
    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int
    total_extlen: int  # in units of 8 bytes (7.38+)
    padding: int


class FuseOutHeader(CTuple, fmt="IiQ"):
    len: int
    error: int  # -errno, 0 on success
    unique: int


class FuseInitInCompat(CTuple, fmt="IIII"):  # fuse_init_in before 7.36
    major: int
    minor: int
    max_readahead: int
    flags: int


class FuseInitIn(CTuple, fmt="IIIII44s"):
    major: int
    minor: int
    max_readahead: int
    flags: int
    flags2: int
    unused: bytes


class FuseInitOut(CTuple, fmt="IIIIHHIIHHIIH22s"):
    major: int
    minor: int
    max_readahead: int
    flags: int
    max_background: int
    congestion_threshold: int
    max_write: int
    time_gran: int
    max_pages: int
    map_alignment: int
    flags2: int
    max_stack_depth: int
    request_timeout: int
    unused: bytes


class FuseAttr(CTuple, fmt="QQQQQQIIIIIIIIII"):
    ino: int
    size: int
    blocks: int
    atime: int
    mtime: int
    ctime: int
    atimensec: int
    mtimensec: int
    ctimensec: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    blksize: int
    flags: int


class FuseEntryOutHead(CTuple, fmt="QQQQII"):  # fuse_entry_out without its fuse_attr
    nodeid: int
    generation: int
    entry_valid: int
    attr_valid: int
    entry_valid_nsec: int
    attr_valid_nsec: int


class FuseAttrOutHead(CTuple, fmt="QII"):  # fuse_attr_out without its fuse_attr
    attr_valid: int
    attr_valid_nsec: int
    dummy: int


class FuseForgetIn(CTuple, fmt="Q"):
    nlookup: int


class FuseForgetOne(CTuple, fmt="QQ"):
    nodeid: int
    nlookup: int


class FuseBatchForgetIn(CTuple, fmt="II"):
    count: int  # type: ignore[assignment]  # the C name; shadows tuple.count
    dummy: int


class FuseGetattrIn(CTuple, fmt="IIQ"):
    getattr_flags: int
    dummy: int
    fh: int


class FuseSetattrIn(CTuple, fmt="IIQQQQQQIIIIIIII"):
    valid: int
    padding: int
    fh: int
    size: int
    lock_owner: int
    atime: int
    mtime: int
    ctime: int
    atimensec: int
    mtimensec: int
    ctimensec: int
    mode: int
    unused4: int
    uid: int
    gid: int
    unused5: int


class FuseOpenIn(CTuple, fmt="II"):
    flags: int
    open_flags: int


class FuseOpenOut(CTuple, fmt="QIi"):
    fh: int
    open_flags: int
    backing_id: int


class FuseReadIn(CTuple, fmt="QQIIQII"):
    fh: int
    offset: int
    size: int
    read_flags: int
    lock_owner: int
    flags: int
    padding: int


class FuseWriteIn(CTuple, fmt="QQIIQII"):
    fh: int
    offset: int
    size: int
    write_flags: int
    lock_owner: int
    flags: int
    padding: int


class FuseWriteOut(CTuple, fmt="II"):
    size: int
    padding: int


class FuseReleaseIn(CTuple, fmt="QIIQ"):
    fh: int
    flags: int
    release_flags: int
    lock_owner: int


class FuseFlushIn(CTuple, fmt="QIIQ"):
    fh: int
    unused: int
    padding: int
    lock_owner: int


class FuseFsyncIn(CTuple, fmt="QII"):
    fh: int
    fsync_flags: int
    padding: int


class FuseAccessIn(CTuple, fmt="II"):
    mask: int
    padding: int


class FuseGetxattrIn(CTuple, fmt="II"):
    size: int
    padding: int


class FuseGetxattrOut(CTuple, fmt="II"):
    size: int
    padding: int


class FuseIoctlIn(CTuple, fmt="QIIQII"):
    fh: int
    flags: int
    cmd: int
    arg: int
    in_size: int
    out_size: int


class FuseIoctlOut(CTuple, fmt="iIII"):
    result: int
    flags: int
    in_iovs: int
    out_iovs: int


class FusePollIn(CTuple, fmt="QQII"):
    fh: int
    kh: int
    flags: int
    events: int


class FusePollOut(CTuple, fmt="II"):
    revents: int
    padding: int


class FuseNotifyPollWakeupOut(CTuple, fmt="Q"):
    kh: int


class FuseInterruptIn(CTuple, fmt="Q"):
    unique: int


class FuseKstatfs(CTuple, fmt="QQQQQIIII24s"):  # fuse_statfs_out is just this
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    bsize: int
    namelen: int
    frsize: int
    padding: int
    spare: bytes


class FuseDirent(CTuple, fmt="QQII"):  # followed by the name, padded to 8 bytes
    ino: int
    off: int
    namelen: int
    type: int


# --- FUSE over io_uring (7.42) -----------------------------------------------------------
# A server registers ring entries with IORING_OP_URING_CMD on /dev/fuse (128-byte SQEs):
# each entry is two buffers, a `fuse_uring_req_header` and a payload of at least the
# ring's max payload size. fs/fuse/dev_uring.c copies a request's fuse_in_header to
# ``in_out``, its first argument (the per-opcode struct) to ``op_in`` and the rest to the
# payload; a reply is a fuse_out_header in ``in_out`` and every out argument in the payload.

FUSE_URING_IN_OUT_HEADER_SZ: Final = 128
FUSE_URING_OP_IN_OUT_SZ: Final = 128
FUSE_URING_REQ_HEADER_SIZE: Final = 288  # sizeof(struct fuse_uring_req_header)
FUSE_URING_ENT_IN_OUT_OFFSET: Final = 256  # offsetof(.., ring_ent_in_out)


class FuseUringCmd(enum.IntEnum):
    """enum fuse_uring_cmd: the ``cmd_op`` of the SQE."""

    FUSE_IO_URING_CMD_INVALID = 0
    FUSE_IO_URING_CMD_REGISTER = 1
    FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2


class FuseUringEntInOut(CTuple, fmt="QQIIQ"):
    """The last 32 bytes of struct fuse_uring_req_header."""

    flags: int
    commit_id: int  # the request's unique, echoed back in fuse_uring_cmd_req
    payload_sz: int  # bytes used in the payload buffer, either way
    padding: int
    reserved: int


class FuseUringCmdReq(CTuple, fmt="QQH6s"):  # in the 80-byte command area of the SQE
    flags: int
    commit_id: int
    qid: int
    padding: bytes
