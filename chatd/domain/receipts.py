"""Read receipts and typing notices: small signals relayed to a channel's online members.

A read mark is stored (monotonic: an older mark is ignored) through the group committer, then
relayed as ``{type:"read", channel, user_id, msg_id}`` to the other members' online devices and
to the reader's own other devices. Read frames are rate-limited per user
(``limits.read_rate``/``read_burst``), each counts as in flight on its connection until the
commit that carries it is durable (like a send: ``DeviceSink.finished``), and they
are coalesced per (user, channel): while one commit is in flight, further reads only raise the
mark waiting behind it, so a burst of N reads costs at most two commits and two relays, not N
commits and N relays per member device.

Typing notices are relayed to the other members only, are never stored, and are rate-limited
per user per channel (``limits.typing_rate``/``typing_burst``).
"""

from __future__ import annotations

import trio

from chatd.domain import channels
from chatd.domain.errors import BadRequest, RateLimited, Unavailable
from chatd.domain.memberships_tx import mark_read
from chatd.domain.ports import DeviceSink, Elsewhere, NoElsewhere, Shared
from chatd.domain.ratelimit import RateLimiter
from chatd.domain.sessions import Sessions
from storage import StorageUnavailable, Store


class _Waiting:
    """The mark asked for while a (user, channel) commit is in flight, and the read frames
    that wait for a commit (each counted in flight on its connection)."""

    __slots__ = ("msg_id", "conn", "members", "frames")

    def __init__(self) -> None:
        self.msg_id = 0  # the highest mark asked for since the commit in flight started
        self.conn: DeviceSink | None = None  # the device that asked for it (relay skips it)
        self.members: list[str] = []
        self.frames: list[DeviceSink] = []


class Receipts:
    def __init__(
        self,
        store: Store,
        sessions: Sessions,
        *,
        read_limiter: RateLimiter,
        typing_limiter: RateLimiter,
        elsewhere: Elsewhere | None = None,
    ) -> None:
        self.store = store
        self.elsewhere: Elsewhere = elsewhere or NoElsewhere()  # members on other shards
        self.sessions = sessions
        self.read_limiter = read_limiter
        self.typing_limiter = typing_limiter
        #: (user, channel) with a read-mark commit in flight -> what waits behind it.
        self._waiting: dict[tuple[str, str], _Waiting] = {}

    def _relay(
        self, members: list[str], frame: Shared, *, skip_user: str, skip: DeviceSink
    ) -> None:
        for user in members:
            if user == skip_user:
                continue
            for device in self.sessions.devices(user):
                if device is not skip:
                    device.notify(frame)
        self.elsewhere.notify((m for m in members if m != skip_user), frame.frame)

    def read(self, conn: DeviceSink, channel: str, msg_id: int) -> None:
        """Raise ``conn``'s user's read mark in ``channel``. Raises a ChatError if refused at
        once; otherwise ``conn.finished(None or error)`` follows once the mark is durable."""
        user = conn.user_id
        wait = self.read_limiter.take(user)
        if wait:
            raise RateLimited("read receipts too fast", retry_after=wait)
        members = channels.check_member(self.store, channel, user)
        if not 1 <= msg_id <= self.store.channel_last_id(channel):
            raise BadRequest(f"no message {msg_id} in {channel}")
        key = (user, channel)
        waiting = self._waiting.get(key)
        if waiting is not None:  # a commit is in flight: raise the mark waiting behind it
            waiting.frames.append(conn)
            if msg_id > waiting.msg_id:
                waiting.msg_id, waiting.conn, waiting.members = msg_id, conn, members
            return
        self._commit(key, msg_id, conn, members, [conn])

    def _commit(
        self,
        key: tuple[str, str],
        msg_id: int,
        conn: DeviceSink,
        members: list[str],
        frames: list[DeviceSink],
    ) -> None:
        """Store ``msg_id`` as ``key``'s mark; when durable, relay it and ack ``frames``, then
        commit whatever mark was asked for meanwhile (one commit for all of them)."""
        user, channel = key

        def stored(changed: bool | None, error: BaseException | None) -> None:
            waiting = self._waiting.pop(key)
            failure = None
            if error is not None:
                text = str(error) if isinstance(error, StorageUnavailable) else "read not stored"
                failure = Unavailable(text)
            for done in frames:
                done.finished(failure)
            if failure is None and changed:
                relay = {"type": "read", "channel": channel, "user_id": user, "msg_id": msg_id}
                self._relay(members, Shared(relay), skip_user="", skip=conn)
            if waiting.conn is not None and waiting.msg_id > msg_id:
                try:
                    self._commit(key, waiting.msg_id, waiting.conn, waiting.members, waiting.frames)
                    return
                except Unavailable as exc:
                    failure = exc
            for done in waiting.frames:  # nothing (more) to store for these
                done.finished(failure)

        self._waiting[key] = _Waiting()
        try:
            self.store.submit(lambda tx: mark_read(tx, user, channel, msg_id), stored)
        except (trio.WouldBlock, StorageUnavailable) as exc:
            del self._waiting[key]
            text = str(exc) if isinstance(exc, StorageUnavailable) else "server busy, retry shortly"
            raise Unavailable(text, retry_after=0.05) from None

    def typing(self, conn: DeviceSink, channel: str) -> None:
        user = conn.user_id
        members = channels.check_member(self.store, channel, user)
        wait = self.typing_limiter.take(f"{user}\0{channel}")
        if wait:
            raise RateLimited("typing notices too fast", retry_after=wait)
        relay = Shared({"type": "typing", "channel": channel, "user_id": user})
        self._relay(members, relay, skip_user=user, skip=conn)
