"""include/uapi/asm-generic/poll.h: the poll event bits a file's ``poll`` answers with
(FUSE_POLL carries them as they are)."""

from __future__ import annotations

from typing import Final

POLLIN: Final = 0x0001
POLLPRI: Final = 0x0002
POLLOUT: Final = 0x0004
POLLERR: Final = 0x0008
POLLHUP: Final = 0x0010
POLLRDNORM: Final = 0x0040
POLLWRNORM: Final = 0x0100
