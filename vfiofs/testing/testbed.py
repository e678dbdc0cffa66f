"""`Testbed`: a `Machine` mounted by a trio thread inside the test process.

The test talks to the mount like any VFIO program (open, ioctl, pread), and reaches the
simulated hardware through `call` (which runs on the daemon's core thread): raise an
interrupt, look at the IOMMU mappings, watch DMA.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from typing import Any, Self, TypeVar

import trio

from ..config import Topology, default_topology, parse_topology
from ..machine import Machine
from ..session.serve import FuseSession, serve

T = TypeVar("T")


class Testbed:
    """Mount ``topology`` (TOML text, a Topology, or None for the built-in one)."""

    def __init__(
        self, topology: str | Topology | None = None, mountpoint: str | None = None
    ) -> None:
        if topology is None:
            topology = default_topology()
        elif isinstance(topology, str):
            topology = parse_topology(topology, "<testbed>")
        self.machine = Machine(topology)
        self._own_dir = mountpoint is None
        self.mountpoint = mountpoint or tempfile.mkdtemp(prefix="vfiofs-testbed-")
        self._session: FuseSession | None = None
        self._cancel: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name="vfiofs-testbed", daemon=True
        )

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError("testbed failed to mount") from self._error
        if self._session is None:
            raise RuntimeError("testbed did not mount in time")
        return self

    def _run(self) -> None:
        async def main() -> None:
            with trio.CancelScope() as scope:
                self._cancel = scope
                async with trio.open_nursery() as nursery:
                    self._session = await nursery.start(
                        lambda task_status: serve(
                            self.machine.tree, self.mountpoint, task_status=task_status
                        )
                    )
                    self._ready.set()

        try:
            trio.run(main)
        except BaseException as e:  # reported to the test thread by start()  # noqa: BLE001
            self._error = e
        finally:
            self._ready.set()

    def stop(self) -> None:
        """Unmount and release everything still open."""
        if self._session is not None and self._cancel is not None:
            cancel = self._cancel
            try:
                trio.from_thread.run_sync(cancel.cancel, trio_token=self._session.token)
            except trio.RunFinishedError:
                pass
        self._thread.join(30)
        if self._own_dir:
            os.rmdir(self.mountpoint)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the simulated side ------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the daemon's core thread and return its result."""
        assert self._session is not None
        return trio.from_thread.run_sync(fn, *args, trio_token=self._session.token)

    def device(self, bdf: str) -> Any:
        """The simulated `PciDevice` at ``bdf``."""
        return self.machine.devices[bdf]

    def raise_irq(self, bdf: str, vector: int = 0) -> None:
        """Make device ``bdf`` signal interrupt ``vector`` (MSI-X, MSI or INTx)."""
        self.call(self.device(bdf).raise_irq, vector)

    def mappings(self, bdf: str) -> list[Any]:
        """What ``bdf`` can reach through its IOMMU: ``Mapping(iova, size, owner, vaddr, prot)``."""
        return self.call(self.machine.mappings, bdf)

    def path(self, rel: str) -> str:
        """A path inside the mount (``dev/vfio/devices/vfio0``)."""
        return os.path.join(self.mountpoint, rel)
