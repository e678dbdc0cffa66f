"""Test helpers for the io_uring transport: the fuse module's ``enable_uring``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

ENABLE_URING = Path("/sys/module/fuse/parameters/enable_uring")


@contextlib.contextmanager
def fuse_uring_parameter(value: bool) -> Iterator[None]:
    """Set the fuse module's ``enable_uring`` (root) and restore the old value after.

    Only the io_uring tests change it (vfiofs itself never does). Other daemons on the
    machine are unaffected: the kernel offers FUSE_OVER_IO_URING in INIT, and only a
    server that asks for it gets it.
    """
    old = ENABLE_URING.read_text().strip()
    ENABLE_URING.write_text("Y" if value else "N")
    try:
        yield
    finally:
        ENABLE_URING.write_text(old)


def uring_unavailable() -> str | None:
    """Why this machine cannot run the io_uring transport tests, or None."""
    if not ENABLE_URING.exists():
        return "no CONFIG_FUSE_IO_URING in this kernel"
    if os.geteuid() != 0:
        return "enabling FUSE over io_uring needs root"
    return None
