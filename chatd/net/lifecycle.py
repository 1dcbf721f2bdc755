"""What the listener and every connection share: admission counts, draining, idleness.

Shutdown follows hypercorn's shape: the listener stops accepting and sets ``draining``
(``/healthz`` answers 503, upgrades are refused), WebSockets are closed with 1001, and the
drain waits (bounded by ``server.drain_timeout``) until no WebSocket is open and no HTTP
request is being handled; :meth:`check_idle` is called as each of those ends.
"""

from __future__ import annotations

from typing import Any

import trio

from chatd.net.admission import ConnectionLimits
from chatd.net.outbound import OVERFLOW_REASON, STALL_REASON


class WebSockets(set[Any]):
    """The open WebSocket connections. As each leaves (its task's last step), the close code
    it was closed with is counted (0: it closed without one of ours, e.g. the peer went
    first), and slow consumers closed for a full outbound queue or a write stall separately:
    plain integer increments, read by ``/metrics``."""

    def __init__(self) -> None:
        super().__init__()
        self.closes: dict[int, int] = {}
        self.overflows = 0
        self.stalls = 0

    def discard(self, conn: Any) -> None:
        if conn in self:
            code = getattr(conn, "close_code", 0)
            self.closes[code] = self.closes.get(code, 0) + 1
            if code == 1008:
                reason = getattr(conn, "close_reason", "")
                if reason == OVERFLOW_REASON:
                    self.overflows += 1
                elif reason == STALL_REASON:
                    self.stalls += 1
        super().discard(conn)


class Lifecycle:
    def __init__(self, connections: ConnectionLimits) -> None:
        #: TCP connections (HTTP or WebSocket), counted at accept, total and per address
        self.connections = connections
        self.draining = False
        self.http_busy = 0  # HTTP requests being handled right now (drain waits for them)
        self.websockets = WebSockets()  # open WebSocket connections
        self._idle = trio.Event()

    def check_idle(self) -> None:
        """Called as connections and requests end: wakes :meth:`wait_idle` while draining."""
        if self.draining and not self.websockets and not self.http_busy:
            self._idle.set()

    async def wait_idle(self) -> None:
        """While draining: return once no WebSocket is open and no HTTP request is in progress."""
        self.check_idle()
        await self._idle.wait()
