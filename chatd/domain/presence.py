"""Online presence: heartbeats, timeouts, grace periods, fan-out to friends, queries.

A user is online while at least one device is connected and has been heard from (any bytes:
a frame or a WebSocket ping) within ``presence.timeout``. Liveness costs almost nothing per
connection:

- Hearing from a device is one float store (``Conn.heard_at``) in its read loop.
- Dead peers that send nothing are found by kernel TCP keepalive and ``TCP_USER_TIMEOUT``
  (set at accept), which costs no Python time.
- Silent devices are found by one sweeper task with a lazy timer wheel: every connection sits in
  the wheel slot of its earliest possible expiry (``heard_at + timeout``). Each tick pops only the
  slots that came due; a connection heard from since is moved to its new slot, a silent one is
  closed 1008. So each connection is looked at about once per timeout period (15,000
  connections / 30 s = 500 checks per second), not once per tick, and no connection has a timer
  task of its own. Slots are sets and each device points at its own, so a device that
  disconnects leaves the wheel at once (the wheel never keeps a closed connection alive).

Transitions are per user, not per device: the first device in makes the user online; when the
last device disconnects the user stays online for ``presence.grace`` seconds, so a reconnect
within it announces nothing (no offline+online flap). A timeout means the user was already
silent for ``presence.timeout``: offline is announced at once. Each transition sends a
``presence`` frame to the online devices of the user's friends (state ``friends``) and stores
``last_active`` durably. Presence is for friends only: sharing a group shows nothing (anyone can
create a group around a stranger), in frames and in ``GET /v1/presence`` alike.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

import trio

from chatd.domain.accounts import now_ms
from chatd.domain.errors import BadRequest, Forbidden
from chatd.protocol.frames import Encoded
from storage.accounts import FRIENDS

if TYPE_CHECKING:
    from chatd.app import App
    from chatd.config import PresenceConfig
    from chatd.net.websocket import Conn

log = logging.getLogger("chatd.presence")
MAX_QUERY = 100


def set_keepalive(sock: socket.socket, cfg: PresenceConfig) -> None:
    """Kernel-side liveness for an accepted connection (Linux socket options)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, cfg.tcp_keepidle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, cfg.tcp_keepintvl)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, cfg.tcp_keepcnt)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(cfg.tcp_user_timeout * 1000))


class Presence:
    def __init__(self, app: App) -> None:
        self.app = app
        self.store = app.store
        self.sessions = app.sessions
        cfg = app.config.presence
        self.timeout = cfg.timeout
        self.grace = cfg.grace
        self.tick = cfg.sweep_interval
        #: slot number -> the devices filed in it. Each device also points at its slot's set
        #: (``Conn.wheel_slot``), so one that disconnects leaves at once, in O(1).
        self._wheel: dict[int, set[Conn]] = {}
        self._swept = int(trio.current_time() // self.tick)
        #: users whose last device left: (trio time their offline is due, last heard in ms)
        self._leaving: dict[str, tuple[float, int]] = {}

    # -- device events (called by chatd/ws.py)
    def connected(self, conn: Conn) -> None:
        """A device finished hello and is in the session table."""
        self._schedule(conn, conn.heard_at + self.timeout)
        user = conn.user_id
        if self._leaving.pop(user, None) is not None:
            return  # back within the grace period: no flap
        if self.sessions.count(user) == 1:
            self._transition(user, "online", now_ms())

    def disconnected(self, conn: Conn, *, timed_out: bool) -> None:
        """A device left the session table (for any reason)."""
        self._unschedule(conn)
        user = conn.user_id
        if self.sessions.count(user) or user in self._leaving:
            return
        if self.app.draining:  # no one to tell; keep last_active for after the restart
            self._store_last_active(user, self._ms(conn.heard_at))
        elif timed_out:
            self._transition(user, "offline", self._ms(conn.heard_at))
        else:
            self._leaving[user] = (trio.current_time() + self.grace, self._ms(conn.heard_at))

    # -- the sweeper
    async def run(self) -> None:
        """Tick forever: expire silent devices, announce users whose grace ran out."""
        while True:
            await trio.sleep_until((self._swept + 1) * self.tick)
            self.sweep()

    def sweep(self) -> None:
        now = trio.current_time()
        due = int(now // self.tick)
        for slot in range(self._swept + 1, due + 1):
            for conn in self._wheel.pop(slot, ()):
                conn.wheel_slot = None
                if conn.closing or not conn.user_id:
                    continue
                expires = conn.heard_at + self.timeout
                if expires <= now:
                    conn.timed_out = True
                    conn.close(1008, "heartbeat timeout")
                else:
                    self._schedule(conn, expires)
        self._swept = max(self._swept, due)
        for user, (deadline, last_active) in list(self._leaving.items()):
            if deadline <= now:
                del self._leaving[user]
                self._transition(user, "offline", last_active)

    def _schedule(self, conn: Conn, expires: float) -> None:
        slot = max(int(expires // self.tick) + 1, self._swept + 1)
        conns = self._wheel.get(slot)
        if conns is None:
            conns = self._wheel[slot] = set()
        conns.add(conn)
        conn.wheel_slot = conns

    @staticmethod
    def _unschedule(conn: Conn) -> None:
        if conn.wheel_slot is not None:
            conn.wheel_slot.discard(conn)
            conn.wheel_slot = None

    # -- state
    def _ms(self, heard_at: float) -> int:
        """A trio timestamp as wall-clock milliseconds."""
        return now_ms() - int((trio.current_time() - heard_at) * 1000)

    def _last_heard_ms(self, user: str) -> int:
        record = self.store.account(user) or {}
        return int(record.get("last_active") or 0)

    def status(self, user: str) -> dict[str, Any]:
        devices = self.sessions.devices(user)
        if devices:
            last = self._ms(max(d.heard_at for d in devices))
            return {"user_id": user, "status": "online", "last_active": last}
        if user in self._leaving:
            return {"user_id": user, "status": "online", "last_active": self._leaving[user][1]}
        return {
            "user_id": user,
            "status": "offline",
            "last_active": self._last_heard_ms(user) or None,
        }

    def _store_last_active(self, user: str, last_active: int) -> None:
        try:
            self.store.submit_update(user, {"last_active": last_active}, self._stored)
        except trio.WouldBlock:
            log.warning("last_active of %s not stored: commit queue full", user)

    def _transition(self, user: str, status: str, last_active: int) -> None:
        self._store_last_active(user, last_active)
        frame = Encoded(
            {"type": "presence", "user_id": user, "status": status, "last_active": last_active}
        )
        for friend, state in self.store.friends(user):
            if state == FRIENDS:
                for device in self.sessions.devices(friend):
                    device.send_encoded(frame)

    @staticmethod
    def _stored(_result: object, error: BaseException | None) -> None:
        if error is not None:
            log.warning("last_active not stored: %s", error)

    # -- queries
    def snapshot(self, conn: Conn) -> None:
        """One ``presence`` frame per friend, sent to a device that just connected."""
        for friend, state in self.store.friends(conn.user_id):
            if state == FRIENDS:
                conn.send_frame({"type": "presence", **self.status(friend)})

    def query(self, user: str, targets: list[str]) -> list[dict[str, Any]]:
        """Presence of friends (state ``friends``) or oneself; Forbidden for anyone else.

        Sharing a group grants nothing: anyone may create a group around a stranger. An
        unknown user id is refused exactly like a stranger, so a query cannot probe accounts.
        """
        if not targets:
            raise BadRequest("give at least one user_id")
        if len(targets) > MAX_QUERY:
            raise BadRequest(f"at most {MAX_QUERY} user_ids per query")
        allowed = {user} | {f for f, s in self.store.friends(user) if s == FRIENDS}
        refused = sorted(set(targets) - allowed)
        if refused:
            raise Forbidden(f"not a friend: {', '.join(refused)}")
        return [self.status(t) for t in targets]
