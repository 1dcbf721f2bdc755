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


class Lifecycle:
    def __init__(self, connections: ConnectionLimits) -> None:
        #: TCP connections (HTTP or WebSocket), counted at accept, total and per address
        self.connections = connections
        self.draining = False
        self.http_busy = 0  # HTTP requests being handled right now (drain waits for them)
        self.websockets: set[Any] = set()  # open WebSocket connections
        self._idle = trio.Event()

    def check_idle(self) -> None:
        """Called as connections and requests end: wakes :meth:`wait_idle` while draining."""
        if self.draining and not self.websockets and not self.http_busy:
            self._idle.set()

    async def wait_idle(self) -> None:
        """While draining: return once no WebSocket is open and no HTTP request is in progress."""
        self.check_idle()
        await self._idle.wait()
