"""Sockets watched for input by one task: a private epoll whose own descriptor trio waits on.

Owns `ReadableSockets`: `watch(fd, callback)` calls `callback()` from the loop each time the
socket has bytes to read or its peer has closed, until `unwatch(fd)`; no task per socket and no
cancellation when the watch ends. The HTTP/1.1 server uses it to notice a client that leaves
while its request waits (a synchronous execute, a long poll): a watcher task per request, cut
short by cancellation when the answer came first, had cost 60 to 100 us a request, more than
reading the request.

Linux only (`select.epoll`); elsewhere `available()` is False and callers fall back to a task.
"""

from __future__ import annotations

import contextlib
import logging
import select
from collections.abc import Callable

import trio

log = logging.getLogger("emulator.readiness")

_EVENTS = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLRDHUP", 0)
# Ready sockets handled per wake-up before other tasks run.
BATCH = 256


def available() -> bool:
    return hasattr(select, "epoll")


class ReadableSockets:
    """Callbacks for readable sockets; `run()` must be running for them to be called."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self.running = False

    def watch(self, fd: int, callback: Callable[[], None]) -> bool:
        """Start calling `callback`; False if the socket cannot be watched (closed)."""
        try:
            self._epoll.register(fd, _EVENTS)
        except FileExistsError:
            # Left registered by an owner of a descriptor with the same number.
            self._epoll.modify(fd, _EVENTS)
        except OSError:
            return False
        self._callbacks[fd] = callback
        return True

    def unwatch(self, fd: int) -> None:
        if self._callbacks.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)

    def __len__(self) -> int:
        return len(self._callbacks)

    async def run(self) -> None:
        """Call back the ready sockets' owners, until cancelled."""
        self.running = True
        try:
            while True:
                await trio.lowlevel.wait_readable(self._epoll.fileno())
                for fd, _ in self._epoll.poll(0, BATCH):
                    callback = self._callbacks.get(fd)
                    if callback is None:
                        continue
                    try:
                        callback()
                    except Exception:
                        log.exception("a readiness callback failed")
                        self.unwatch(fd)
        finally:
            self.running = False
            self._epoll.close()
