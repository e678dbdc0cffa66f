"""Wait queues, as the kernel's ``wait_queue_head_t``, without any I/O.

A handler that must wait raises `WouldBlock(queue)`; the session parks the request until
the queue is woken, then runs the handler again (or answers EINTR if the caller was
interrupted). ``poll`` handlers return the queue to be woken when readiness may change.
Wakers run synchronously on the daemon's core thread.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs


@attrs.define(eq=False)
class WaitQueue:
    """Callbacks to run when the state a waiter cares about changes."""

    _waiters: dict[int, Callable[[], None]] = attrs.Factory(dict)
    _next: int = 0

    def add(self, callback: Callable[[], None]) -> int:
        """Register ``callback`` for the next `wake`; returns a key for `remove`."""
        self._next += 1
        self._waiters[self._next] = callback
        return self._next

    def remove(self, key: int) -> None:
        """Forget a waiter (no error if it already ran)."""
        self._waiters.pop(key, None)

    def wake(self) -> None:
        """Run and forget every registered callback."""
        waiters, self._waiters = self._waiters, {}
        for cb in waiters.values():
            cb()

    def __len__(self) -> int:
        return len(self._waiters)


class WouldBlock(Exception):
    """The operation must wait until ``queue`` is woken, then be tried again."""

    def __init__(self, queue: WaitQueue) -> None:
        super().__init__()
        self.queue = queue
