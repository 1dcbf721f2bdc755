"""The in-memory session table: user_id -> that user's live, authenticated connections."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from chatd.domain.errors import Unauthorized

if TYPE_CHECKING:
    from chatd.net.websocket import Conn


def sign_out(conn: Conn, reason: str) -> None:
    """End an authenticated connection whose token stopped working (revoked or expired): an
    ``unauthorized`` error frame, then close 4001."""
    conn.send_frame(Unauthorized(reason).frame())
    conn.close(4001, reason)


class Sessions:
    def __init__(self) -> None:
        self._by_user: dict[str, list[Conn]] = {}

    def add(self, conn: Conn) -> None:
        self._by_user.setdefault(conn.user_id, []).append(conn)

    def remove(self, conn: Conn) -> None:
        conns = self._by_user.get(conn.user_id)
        if conns is None or conn not in conns:
            return
        conns.remove(conn)
        if not conns:
            del self._by_user[conn.user_id]

    def devices(self, user_id: str) -> list[Conn]:
        return self._by_user.get(user_id, [])

    def count(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    def revoke(self, user_id: str, token_digest: bytes) -> None:
        """Close (4001) every connection of ``user_id`` that authenticated with this token."""
        for conn in list(self.devices(user_id)):
            if conn.token_digest == token_digest:
                sign_out(conn, "token revoked")

    def users(self) -> int:
        return len(self._by_user)

    def __iter__(self) -> Iterator[Conn]:
        for conns in self._by_user.values():
            yield from conns
