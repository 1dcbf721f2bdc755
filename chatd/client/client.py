"""``ChatClient``: one user's account over HTTP and its WebSocket sessions.

    client = ChatClient("http://127.0.0.1:8080", "alice", "password")
    await client.signup()
    async with client.session() as s:
        ack = await s.send(to="bob", body="hi")

Sessions themselves (reconnects, ``since`` sync, resends, buffering) are in
``chatd/client/session.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from chatd.client.http import HttpClient
from chatd.client.session import BUFFER, Session


class ChatClient:
    def __init__(
        self,
        base_url: str,
        user_id: str,
        password: str | None = None,
        *,
        token: str | None = None,
        binary: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.user_id = user_id
        self.password = password
        self.token = token
        self.ws_url = ""
        self.binary = binary

    def http(self) -> HttpClient:
        return HttpClient(self.base_url, token=self.token)

    async def signup(self, display_name: str | None = None) -> None:
        body: dict[str, Any] = {"user_id": self.user_id, "password": self.password}
        if display_name:
            body["display_name"] = display_name
        async with self.http() as http:
            await http.call("POST", "/v1/signup", body)

    async def login(self) -> str:
        async with self.http() as http:
            data = await http.call(
                "POST", "/v1/login", {"user_id": self.user_id, "password": self.password}
            )
        self.token, self.ws_url = data["token"], data["ws_url"]
        return data["token"]  # type: ignore[no-any-return]

    @asynccontextmanager
    async def session(
        self,
        *,
        since: int | None = None,
        reconnect: bool = True,
        heartbeat: float | None = 10.0,
        buffer: int = BUFFER,
    ) -> AsyncIterator[Session]:
        """A connected device; ``since`` resumes from a stored cursor. A ``ping`` frame goes out
        every ``heartbeat`` seconds (None: never) so the server keeps the device online.
        ``buffer`` frames wait for the application at most (see the module's docstring)."""
        if self.token is None:
            await self.login()
        if not self.ws_url:
            self.ws_url = self.base_url.replace("http", "ws", 1) + "/v1/ws"
        async with trio.open_nursery() as nursery:
            session = Session(self, nursery, since=since, reconnect=reconnect, buffer=buffer)
            await session._connect()
            nursery.start_soon(session._keep)
            if heartbeat is not None:
                nursery.start_soon(session._heartbeat, heartbeat)
            try:
                yield session
            finally:
                await session.aclose()
