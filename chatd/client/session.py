"""WebSocket sessions for Python clients, on trio-websocket.

``ChatClient`` logs in over HTTP and opens :class:`Session`\\ s. A session keeps one device
connected: it reconnects with jittered exponential backoff (on drain 1001, a dropped socket, or
a slow-consumer 1008), resumes from its cursor with ``hello.since`` so no message is missed, and
re-sends every un-acked ``send`` with its original ``ref`` (the server answers a known ref with
the original ack, so nothing is stored twice).

    client = ChatClient("http://127.0.0.1:8080", "alice", "password")
    async with client.session() as s:
        ack = await s.send(to="bob", body="hi")
        async for msg in s.messages():
            ...
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
)

from chatd.client.http import HttpClient

RECONNECT_CODES = {1001, 1006, 1008, 1011, 1012, 1013}


class ChatError(Exception):
    """An ``error`` frame answering one of our requests (``code`` as in the contract)."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.frame = frame
        self.code = frame.get("code")


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
        self, *, since: int | None = None, reconnect: bool = True, heartbeat: float | None = 10.0
    ) -> AsyncIterator[Session]:
        """A connected device; ``since`` resumes from a stored cursor. A ``ping`` frame goes out
        every ``heartbeat`` seconds (None: never) so the server keeps the device online."""
        if self.token is None:
            await self.login()
        if not self.ws_url:
            self.ws_url = self.base_url.replace("http", "ws", 1) + "/v1/ws"
        async with trio.open_nursery() as nursery:
            session = Session(self, nursery, since=since, reconnect=reconnect)
            await session._connect()
            nursery.start_soon(session._keep)
            if heartbeat is not None:
                nursery.start_soon(session._heartbeat, heartbeat)
            try:
                yield session
            finally:
                await session.aclose()


class Session:
    def __init__(
        self, client: ChatClient, nursery: trio.Nursery, *, since: int | None, reconnect: bool
    ) -> None:
        self.client = client
        self._nursery = nursery
        #: cur_max_message_id: the highest inbox seq this device has received in order.
        self.cursor: int | None = since
        self.reconnect = reconnect
        self.welcome: dict[str, Any] = {}
        self.synced = trio.Event()
        self.closed: ConnectionClosed | None = None
        self.connects = 0
        self._ws: WebSocketConnection | None = None
        self._pending: dict[str, tuple[dict[str, Any], trio.Event, list[Any]]] = {}
        self._pong: trio.Event | None = None
        self._in_send, self._in_recv = trio.open_memory_channel[dict[str, Any]](10_000)
        self._up = trio.Event()
        self._done = False

    # -- public API
    async def send(
        self,
        *,
        body: str,
        to: str | None = None,
        channel: str | None = None,
        ref: str | None = None,
    ) -> dict[str, Any]:
        """Send a message and return its ack (durable on the server). Raises ChatError."""
        frame: dict[str, Any] = {"type": "send", "ref": ref or secrets.token_hex(8), "body": body}
        if to is not None:
            frame["to"] = to
        if channel is not None:
            frame["channel"] = channel
        return await self._request(frame)

    async def history(
        self, channel: str, *, before: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        frame: dict[str, Any] = {"type": "history", "ref": secrets.token_hex(8), "channel": channel}
        if before is not None:
            frame["before"] = before
        if limit is not None:
            frame["limit"] = limit
        reply = await self._request(frame)
        return reply["messages"]  # type: ignore[no-any-return]

    async def ping(self) -> None:
        self._pong = trio.Event()
        await self.send_frame({"type": "ping"})
        await self._pong.wait()

    async def send_frame(self, frame: dict[str, Any]) -> None:
        """Send any frame as is (no ack tracking)."""
        await self._up.wait()
        assert self._ws is not None
        if self.client.binary:
            await self._ws.send_message(msgpack.packb(frame))
        else:
            await self._ws.send_message(json.dumps(frame))

    async def next_frame(self) -> dict[str, Any]:
        """The next server frame other than acks, replies and pongs (msg, presence, ...)."""
        return await self._in_recv.receive()

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """``msg`` frames, across reconnects, in inbox order."""
        async for frame in self._in_recv:
            if frame["type"] == "msg":
                yield frame

    async def aclose(self) -> None:
        self._done = True
        self._give_up()
        await self._discard()
        self._nursery.cancel_scope.cancel()

    # -- internals
    async def _request(self, frame: dict[str, Any]) -> dict[str, Any]:
        done, box = trio.Event(), list[dict[str, Any]]()
        self._pending[frame["ref"]] = (frame, done, box)
        try:
            if self._up.is_set():
                try:
                    await self.send_frame(frame)
                except ConnectionClosed:
                    pass  # re-sent after the reconnect
            await done.wait()
        finally:
            self._pending.pop(frame["ref"], None)
        if not box:
            assert self.closed is not None
            raise self.closed
        reply = box[0]
        if reply["type"] == "error":
            raise ChatError(reply)
        return reply  # type: ignore[no-any-return]

    async def _discard(self) -> None:
        """Close the current WebSocket (bounded) and its TCP stream: trio-websocket leaves the
        stream open when the server closed first."""
        if self._ws is not None:
            ws, self._ws = self._ws, None
            with trio.move_on_after(2):
                await ws.aclose()
            await ws._stream.aclose()

    async def _connect(self) -> None:
        await self._discard()
        ws = await connect_websocket_url(
            self._nursery,
            self.client.ws_url,
            subprotocols=["chatd.v1.msgpack" if self.client.binary else "chatd.v1.json"],
            message_queue_size=1024,
            max_message_size=1 << 21,
        )
        hello: dict[str, Any] = {"type": "hello", "token": self.client.token}
        if self.cursor is not None:
            hello["since"] = self.cursor
        self._ws = ws
        self._up = trio.Event()
        self._up.set()
        self.synced = trio.Event()
        await self.send_frame(hello)
        self.welcome = self._decode(await ws.get_message())
        if self.welcome.get("type") != "welcome":
            await ws.aclose()
            raise ChatError(self.welcome)
        if self.cursor is None:
            self.cursor = self.welcome["inbox_head"]
            self.synced.set()
        self.connects += 1
        for frame, _, _ in list(self._pending.values()):
            await self.send_frame(frame)

    def _decode(self, data: str | bytes) -> dict[str, Any]:
        if isinstance(data, bytes):
            return msgpack.unpackb(data, raw=False)  # type: ignore[no-any-return]
        return json.loads(data)  # type: ignore[no-any-return]

    async def _keep(self) -> None:
        """Read frames; on a drop, reconnect with jittered exponential backoff."""
        delay = 0.1
        while not self._done and self._ws is not None:
            ws = self._ws  # aclose() may clear self._ws while we wait
            try:
                while True:
                    self._on_frame(self._decode(await ws.get_message()))
                    delay = 0.1
            except ConnectionClosed as exc:
                if self._done:
                    return
                self.closed = exc
                self._up = trio.Event()
                code = exc.reason.code if exc.reason else 1006
                if not self.reconnect or code not in RECONNECT_CODES:
                    self._give_up()
                    await self._discard()
                    return
            while not self._done:
                await trio.sleep(random.uniform(0, delay))  # full jitter
                delay = min(delay * 2, 10.0)
                try:
                    await self._connect()
                    break
                except (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError):
                    continue

    async def _heartbeat(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            if self._up.is_set():
                try:
                    await self.send_frame({"type": "ping"})
                except ConnectionClosed:
                    pass  # _keep reconnects

    def _give_up(self) -> None:
        """The session is over for good: wake every waiting request and iterator."""
        self._in_send.close()
        for _, done, _ in self._pending.values():
            done.set()

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        ref = frame.get("ref")
        if kind in ("ack", "history", "error") and ref in self._pending:
            _, done, box = self._pending[ref]
            box.append(frame)
            done.set()
            if kind == "ack" and self.synced.is_set() and frame["inbox"] == (self.cursor or 0) + 1:
                self.cursor = frame["inbox"]
            return
        if kind == "pong":
            if self._pong is not None:
                self._pong.set()
            return
        if kind == "msg":
            self.cursor = max(self.cursor or 0, frame["inbox"])
        elif kind == "synced":
            self.cursor = max(self.cursor or 0, frame["head"])
            self.synced.set()
        if not self._done:
            self._in_send.send_nowait(frame)
