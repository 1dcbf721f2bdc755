"""Read receipts and typing notices: small signals relayed to a channel's online members.

A read mark is stored (monotonic: an older mark is ignored) through the group committer, then
relayed as ``{type:"read", channel, user_id, msg_id}`` to the other members' online devices and
to the reader's own other devices. Read frames are rate-limited per user
(``limits.read_rate``/``read_burst``), each counts as in flight on its connection until the
commit that carries it is durable (like a send: see ``MAX_INFLIGHT`` in chatd/ws.py), and they
are coalesced per (user, channel): while one commit is in flight, further reads only raise the
mark waiting behind it, so a burst of N reads costs at most two commits and two relays, not N
commits and N relays per member device.

Typing notices are relayed to the other members only, are never stored, and are rate-limited
per user per channel (``limits.typing_rate``/``typing_burst``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from chatd.domain import channels
from chatd.domain.errors import BadRequest, RateLimited, Unavailable
from chatd.domain.ratelimit import RateLimiter
from chatd.protocol.frames import Encoded, Read, Typing
from storage import StorageUnavailable

if TYPE_CHECKING:
    from chatd.app import App
    from chatd.net.websocket import Conn


class _Waiting:
    """The mark asked for while a (user, channel) commit is in flight, and the read frames
    that wait for a commit (each counted in flight on its connection)."""

    __slots__ = ("msg_id", "conn", "members", "frames")

    def __init__(self) -> None:
        self.msg_id = 0  # the highest mark asked for since the commit in flight started
        self.conn: Conn | None = None  # the device that asked for it (its relay skips it)
        self.members: list[str] = []
        self.frames: list[Conn] = []


class Receipts:
    def __init__(self, app: App) -> None:
        self.app = app
        self.store = app.store
        self.sessions = app.sessions
        limits = app.config.limits
        self.typing_limiter = RateLimiter(limits.typing_rate, limits.typing_burst)
        self.read_limiter = RateLimiter(limits.read_rate, limits.read_burst)
        #: (user, channel) with a read-mark commit in flight -> what waits behind it.
        self._waiting: dict[tuple[str, str], _Waiting] = {}

    def _relay(self, members: list[str], frame: Encoded, *, skip_user: str, skip: Conn) -> None:
        for user in members:
            if user == skip_user:
                continue
            for device in self.sessions.devices(user):
                if device is not skip:
                    device.send_encoded(frame)

    def read(self, conn: Conn, frame: Read) -> None:
        user = conn.user_id
        wait = self.read_limiter.take(user)
        if wait:
            raise RateLimited("read receipts too fast", retry_after=wait)
        members = channels.check_member(self.store, frame.channel, user)
        if not 1 <= frame.msg_id <= self.store.channel_last_id(frame.channel):
            raise BadRequest(f"no message {frame.msg_id} in {frame.channel}")
        key = (user, frame.channel)
        conn.inflight += 1
        waiting = self._waiting.get(key)
        if waiting is not None:  # a commit is in flight: raise the mark waiting behind it
            waiting.frames.append(conn)
            if frame.msg_id > waiting.msg_id:
                waiting.msg_id, waiting.conn, waiting.members = frame.msg_id, conn, members
            return
        try:
            self._commit(key, frame.msg_id, conn, members, [conn])
        except Unavailable:
            conn.acked()
            raise

    def _commit(
        self, key: tuple[str, str], msg_id: int, conn: Conn, members: list[str], frames: list[Conn]
    ) -> None:
        """Store ``msg_id`` as ``key``'s mark; when durable, relay it and ack ``frames``, then
        commit whatever mark was asked for meanwhile (one commit for all of them)."""
        user, channel = key

        def stored(changed: bool | None, error: BaseException | None) -> None:
            waiting = self._waiting.pop(key)
            for done in frames:
                done.acked()
            if error is not None:
                text = str(error) if isinstance(error, StorageUnavailable) else "read not stored"
                conn.send_frame(Unavailable(text).frame())
            elif changed:
                relay = {"type": "read", "channel": channel, "user_id": user, "msg_id": msg_id}
                self._relay(members, Encoded(relay), skip_user="", skip=conn)
            if waiting.conn is not None and waiting.msg_id > msg_id:
                try:
                    self._commit(key, waiting.msg_id, waiting.conn, waiting.members, waiting.frames)
                    return
                except Unavailable as exc:
                    waiting.conn.send_frame(exc.frame())
            for done in waiting.frames:  # nothing (more) to store for these
                done.acked()

        self._waiting[key] = _Waiting()
        try:
            self.store.submit_read(user, channel, msg_id, stored)
        except (trio.WouldBlock, StorageUnavailable) as exc:
            del self._waiting[key]
            text = str(exc) if isinstance(exc, StorageUnavailable) else "server busy, retry shortly"
            raise Unavailable(text, retry_after=0.05) from None

    def typing(self, conn: Conn, frame: Typing) -> None:
        user = conn.user_id
        members = channels.check_member(self.store, frame.channel, user)
        wait = self.typing_limiter.take(f"{user}\0{frame.channel}")
        if wait:
            raise RateLimited("typing notices too fast", retry_after=wait)
        relay = Encoded({"type": "typing", "channel": frame.channel, "user_id": user})
        self._relay(members, relay, skip_user=user, skip=conn)
