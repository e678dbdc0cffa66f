"""Fixtures for unit tests: a machine from a small topology, and callers."""

from __future__ import annotations

import struct

import pytest

from vfiofs.config import parse_topology
from vfiofs.machine import Machine
from vfiofs.uaccess import FakeCaller, OurFile

TOPOLOGY = """
[options]
dma_entry_limit = 8

[[group]]
id = 3
[[group.device]]
bdf = "0000:00:04.0"
model = "memcpy"
vendor = 0x1b36
device = 0x0005
pcie = true
irqs = { intx = true, msi = 4, msix = 4 }
[[group.device.bar]]
index = 0
size = 4096

[[group]]
id = 4
[[group.device]]
bdf = "0000:00:05.0"
model = "mtty"
vendor = 0x4348
device = 0x3253
[[group.device.bar]]
index = 0
size = 8
type = "io"
[[group.device]]
bdf = "0000:00:05.1"
vendor = 0x8086
device = 0x1521
driver = "igb"

[[noiommu_device]]
bdf = "0000:00:06.0"
model = "mtty"
vendor = 0x4348
device = 0x3253
"""


class Env:
    """A machine plus helpers to call ioctls the way a process would."""

    def __init__(self, topology: str = TOPOLOGY) -> None:
        self.machine = Machine(parse_topology(topology))
        self.core = self.machine.core
        self.caller = FakeCaller()
        self._next_fd = 3

    def install(self, handle: object, caller: FakeCaller | None = None) -> int:
        """Give ``handle`` an fd number in the caller's table."""
        c = caller or self.caller
        fd = self._next_fd
        self._next_fd += 1
        c.fds[fd] = OurFile(handle)
        return fd

    def container(self, caller: FakeCaller | None = None):  # type: ignore[no-untyped-def]
        return self.core.open_container(caller or self.caller, 0)

    def group(self, gid: int, caller: FakeCaller | None = None):  # type: ignore[no-untyped-def]
        return self.core.groups[gid].open(caller or self.caller, 0)

    def set_container(self, gf, container, caller: FakeCaller | None = None) -> int:  # type: ignore[no-untyped-def]
        c = caller or self.caller
        fd = self.install(container, c)
        return gf.ioctl(c, 0x3B68, c.alloc(struct.pack("<i", fd)))


@pytest.fixture
def env() -> Env:
    return Env()
