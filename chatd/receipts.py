"""Read receipts and typing notices: small signals relayed to a channel's online members.

A read mark is stored (monotonic: an older mark is ignored) through the group committer, then
relayed as ``{type:"read", channel, user_id, msg_id}`` to the other members' online devices and
to the reader's own other devices. Typing notices are relayed to the other members only, are
never stored, and are rate-limited per user per channel (``limits.typing_rate``/``typing_burst``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from chatd import channels
from chatd.errors import BadRequest, RateLimited, Unavailable
from chatd.protocol.frames import Encoded, Read, Typing
from chatd.ratelimit import RateLimiter
from storage import StorageUnavailable

if TYPE_CHECKING:
    from chatd.app import App
    from chatd.ws import Conn


class Receipts:
    def __init__(self, app: App) -> None:
        self.app = app
        self.store = app.store
        self.sessions = app.sessions
        limits = app.config.limits
        self.typing_limiter = RateLimiter(limits.typing_rate, limits.typing_burst)

    def _relay(self, members: list[str], frame: Encoded, *, skip_user: str, skip: Conn) -> None:
        for user in members:
            if user == skip_user:
                continue
            for device in self.sessions.devices(user):
                if device is not skip:
                    device.send_encoded(frame)

    def read(self, conn: Conn, frame: Read) -> None:
        user = conn.user_id
        members = channels.check_member(self.store, frame.channel, user)
        if not 1 <= frame.msg_id <= self.store.channel_last_id(frame.channel):
            raise BadRequest(f"no message {frame.msg_id} in {frame.channel}")

        def stored(changed: bool | None, error: BaseException | None) -> None:
            if error is not None:
                text = str(error) if isinstance(error, StorageUnavailable) else "read not stored"
                conn.send_frame(Unavailable(text).frame())
                return
            if changed:
                relay = Encoded(
                    {
                        "type": "read",
                        "channel": frame.channel,
                        "user_id": user,
                        "msg_id": frame.msg_id,
                    }
                )
                self._relay(members, relay, skip_user="", skip=conn)

        try:
            self.store.submit_read(user, frame.channel, frame.msg_id, stored)
        except trio.WouldBlock:
            raise Unavailable("server busy, retry shortly", retry_after=0.05) from None

    def typing(self, conn: Conn, frame: Typing) -> None:
        user = conn.user_id
        members = channels.check_member(self.store, frame.channel, user)
        wait = self.typing_limiter.take(f"{user}\0{frame.channel}")
        if wait:
            raise RateLimited("typing notices too fast", retry_after=wait)
        relay = Encoded({"type": "typing", "channel": frame.channel, "user_id": user})
        self._relay(members, relay, skip_user=user, skip=conn)
