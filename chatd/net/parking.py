"""Idle WebSocket connections wait in one epoll set, served by one task, instead of one task each.

Why: an idle connection used to be a trio task blocked in ``wait_readable``: the task, its
coroutine chain, a cancel status, a cancel scope with a deadline in trio's timer heap, an
epoll waiter and an abort closure, about 2.5 KiB per connection, more than half of what an
idle connection cost. A *parked* connection is only its socket's entry in this set (kernel
memory, not the process's) and a dict slot; liveness, the hello deadline and token expiry are
the heartbeat wheel's (``chatd/net/heartbeat.py``).

When a parked socket becomes readable, :meth:`Parking.run` calls the connection's
``on_parked`` in this one task (a plain method: read, parse, answer, all synchronous). A
connection that then needs to wait for something (a replay, backpressure, its close) leaves
the set and gets a task of its own until it is idle again (``chatd/net/websocket.py``).

The set is level-triggered: bytes left unread (more than one ``recv`` worth) report again on
the next pass. A connection always leaves the set before its socket is closed, so a reused
descriptor number never reaches the wrong connection.
"""

from __future__ import annotations

import select
from typing import Any, Protocol

import trio


class Parked(Protocol):
    """What the parking needs of a connection (``chatd/net/websocket.py`` ``Conn``)."""

    parked: bool

    def fileno(self) -> int: ...

    def on_parked(self) -> None:
        """The socket is readable (or at EOF, or in error): handle it, without blocking."""

    def abandon(self) -> None:
        """The parking is shutting down (its task was cancelled): close at once, no awaits."""


class Parking:
    """One epoll set of idle connections, and the task that serves it."""

    def __init__(self) -> None:
        self._epoll: Any = None  # select.epoll, opened by run()
        self._parked: dict[int, Parked] = {}

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, conn: Parked) -> bool:
        """Wait for ``conn`` to become readable. False if the parking is not running (it has
        not started or is shutting down): the caller keeps serving the connection itself."""
        if self._epoll is None:
            return False
        fd = conn.fileno()
        self._epoll.register(fd, select.EPOLLIN)
        self._parked[fd] = conn
        conn.parked = True
        return True

    def unpark(self, conn: Parked) -> None:
        """Stop waiting for ``conn`` (before anything else reads it or closes its socket)."""
        if conn.parked:
            conn.parked = False
            fd = conn.fileno()
            del self._parked[fd]
            if self._epoll is not None:
                self._epoll.unregister(fd)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve parked connections until cancelled; then close the ones still parked."""
        self._epoll = epoll = select.epoll()
        parked = self._parked
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                conn: Parked | None = None
                for fd, _ in epoll.poll(0):
                    conn = parked.get(fd)
                    if conn is not None:
                        conn.on_parked()
                conn = None  # hold no connection while waiting: a closed one must be freed
        finally:
            self._epoll = None
            for conn in list(parked.values()):
                conn.parked = False
                conn.abandon()
            parked.clear()
            epoll.close()
