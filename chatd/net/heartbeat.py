"""Liveness of WebSocket connections: kernel keepalive options and the heartbeat wheel.

A device counts as alive while it has been heard from (any bytes: a frame or a WebSocket ping)
within ``presence.timeout``. This costs almost nothing per connection:

- Hearing from a device is one float store (``Conn.heard_at``) in its read loop.
- Dead peers that send nothing are found by kernel TCP keepalive and ``TCP_USER_TIMEOUT``
  (:func:`set_keepalive`, at accept), which costs no Python time.
- Silent devices are found by one sweeper task with a lazy timer wheel: every connection sits in
  the wheel slot of its earliest possible expiry (``heard_at + timeout``). Each tick pops only the
  slots that came due; a connection heard from since is moved to its new slot, a silent one is
  closed 1008. So each connection is looked at about once per timeout period (15,000
  connections / 30 s = 500 checks per second), not once per tick, and no connection has a timer
  task of its own. Slots are sets and each connection points at its own, so one that
  disconnects leaves the wheel at once (the wheel never keeps a closed connection alive).

The wheel also owns each connection's hard deadline (``Conn.due``): the hello deadline before
the hello, the token's expiry after it. So an idle connection needs no cancel scope, timer or
task of its own (``chatd/net/parking.py``); it asks the connection what its expiry is and, once
passed, tells it to close with whichever reason applies (``expiry``/``expire``). A deadline is
kept to the tick (``presence.sweep_interval``, 1 s by default): the first tick at or after it.

Each tick also lets presence announce the users whose grace period ran out (``on_tick``).
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from typing import Any, Protocol

import trio

from chatd.config import PresenceConfig


def set_keepalive(sock: socket.socket, cfg: PresenceConfig) -> None:
    """Kernel-side liveness for an accepted connection (Linux socket options)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, cfg.tcp_keepidle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, cfg.tcp_keepintvl)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, cfg.tcp_keepcnt)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(cfg.tcp_user_timeout * 1000))


class Watched(Protocol):
    """What the wheel needs of a connection (``chatd/net/websocket.py`` ``Conn``)."""

    wheel_slot: set[Any] | None

    @property
    def closing(self) -> bool: ...

    def expiry(self, timeout: float) -> float:
        """When it is due to be closed unless heard from (``inf``: never)."""

    def expire(self, now: float) -> None:
        """Its expiry passed: close it, with whichever reason applies."""


class Heartbeats:
    def __init__(self, timeout: float, tick: float, on_tick: Callable[[], None]) -> None:
        self.timeout = timeout
        self.tick = tick
        self.on_tick = on_tick
        #: slot number -> the connections filed in it
        self._wheel: dict[int, set[Watched]] = {}
        self._swept = int(trio.current_time() // self.tick)

    def watch(self, conn: Watched) -> None:
        """File a connection (again) by its earliest possible expiry."""
        self.forget(conn)
        expires = conn.expiry(self.timeout)
        if expires != math.inf:
            self._schedule(conn, expires)

    @staticmethod
    def forget(conn: Watched) -> None:
        """A connection ended: out of the wheel at once, in O(1)."""
        if conn.wheel_slot is not None:
            conn.wheel_slot.discard(conn)
            conn.wheel_slot = None

    async def run(self) -> None:
        """Tick forever: expire silent connections, then ``on_tick``."""
        while True:
            await trio.sleep_until((self._swept + 1) * self.tick)
            self.sweep()

    def sweep(self) -> None:
        now = trio.current_time()
        due = int(now // self.tick)
        for slot in range(self._swept + 1, due + 1):
            for conn in self._wheel.pop(slot, ()):
                conn.wheel_slot = None
                if conn.closing:
                    continue
                expires = conn.expiry(self.timeout)
                if expires <= now:
                    conn.expire(now)
                elif expires != math.inf:
                    self._schedule(conn, expires)
        self._swept = max(self._swept, due)
        self.on_tick()

    def watched(self) -> int:
        """Connections in the wheel (for tests and metrics)."""
        return sum(len(slot) for slot in self._wheel.values())

    def _schedule(self, conn: Watched, expires: float) -> None:
        # The first tick at or after the expiry (a hello deadline of 10 s closes at 10 s).
        slot = max(math.ceil(expires / self.tick), self._swept + 1)
        conns = self._wheel.get(slot)
        if conns is None:
            conns = self._wheel[slot] = set()
        conns.add(conn)
        conn.wheel_slot = conns
