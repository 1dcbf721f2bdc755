"""WebSocket sessions for Python clients, on trio-websocket.

``ChatClient`` logs in over HTTP and opens :class:`Session`\\ s. A session keeps one device
connected: it reconnects with jittered exponential backoff (on drain 1001, a dropped socket, or
a slow-consumer 1008), resumes from its cursor with ``hello.since`` so no message is missed, and
re-sends every un-acked ``send`` with its original ``ref`` (the server answers a known ref with
the original ack, so nothing is stored twice).

Incoming frames wait in a buffer of ``buffer`` frames until the application reads them. A slow
reader never stalls the session (acks and replies keep flowing) and never loses a message: once
the buffer is full, further ``msg`` frames are dropped without moving the cursor, and when the
application has read the buffer down to half, the session reconnects with ``since`` = cursor
and the server replays them, each exactly once and in inbox order. ``presence``, ``read`` and
``typing`` frames that arrive while it lags are dropped (the reconnect brings a fresh presence
snapshot).

A session ends for good when the server refuses it: a revoked or expired token (close 4001 or
an ``unauthorized`` answer to the reconnect's ``hello``), ``too_many_sessions``, or any other
refused ``hello`` except the ones that mean "not now" (``unavailable``, ``rate_limited``, and
the ``bad_request`` of a hello the server did not read within its deadline, as happens under
a reconnect storm): those are retried with backoff like a dropped connection. A refused
session stops reconnecting, and every later operation (``send``, ``send_frame``,
``next_frame``, ``messages`` once the buffered frames are read) raises :class:`ChatError` with
that code. After a close it does not reconnect from (any close with ``reconnect=False``), the
session is over too: ``send`` and ``send_frame`` raise ``ConnectionClosed`` and ``messages``
ends once the buffered frames are read.

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
import ssl
from collections.abc import AsyncIterator
from typing import Any, Protocol
from urllib.parse import urlsplit

import msgpack
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from chatd.protocol import frames

RECONNECT_CODES = {1001, 1006, 1008, 1011, 1012, 1013}
#: Seconds a connect (TCP and the WebSocket upgrade) may take before it is abandoned and
#: retried (see :func:`open_websocket`).
CONNECT_TIMEOUT = 15.0
#: close codes that end a session with an error code, as the refusal's error frame would
REFUSAL_CODES = {4001: "unauthorized", 4002: "wrong_shard"}
BUFFER = 1000  # incoming frames waiting for the application, by default


async def open_websocket(
    nursery: trio.Nursery, url: str, subprotocols: list[str]
) -> WebSocketConnection:
    """A client WebSocket to ``url`` (``ws:`` or ``wss:``), its reader task in ``nursery``;
    ``trio.TooSlowError`` after :data:`CONNECT_TIMEOUT` seconds, with the socket closed.

    trio-websocket's ``connect_websocket_url`` waits for the upgrade's answer with no timeout
    of its own and never wakes if the TCP connection ends before that answer (a server that
    exits with the connection still in its listen backlog): a session would then stop
    reconnecting for good (found by ``python -m bench storm``). Cancelling it would leave
    the socket open and its reader task running. So the stream is opened here and handed to
    ``wrap_client_stream``, and closed if the upgrade does not complete in time."""
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    with trio.fail_after(CONNECT_TIMEOUT):
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
        if secure:
            context = ssl.create_default_context()
            stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=context, https_compatible=True
            )
        else:
            stream = await trio.open_tcp_stream(host, port)
        try:
            return await wrap_client_stream(
                nursery,
                stream,
                host if port in (80, 443) else f"{host}:{port}",
                resource,
                subprotocols=subprotocols,
                message_queue_size=1024,
                max_message_size=1 << 21,
            )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise


class ChatError(Exception):
    """An ``error`` frame answering one of our requests (``code`` as in the contract)."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.frame = frame
        self.code = frame.get("code")


#: Answers to our ``hello`` that say "not now" rather than "never": the server is busy or its
#: storage unavailable, or it did not read our hello within ``server.hello_timeout`` (the
#: only ``bad_request`` a hello this library built can get; close 1008, "reconnect").
RETRY_HELLO_CODES = {"unavailable", "rate_limited", "bad_request"}


class RefusedForNow(ChatError):
    """The server answered ``hello`` with an error worth retrying (:data:`RETRY_HELLO_CODES`):
    a reconnect backs off and tries again instead of ending the session."""


class Connects(Protocol):
    """Where and as whom a session connects (a logged-in :class:`~chatd.client.ChatClient`)."""

    ws_url: str
    token: str | None
    binary: bool


class Session:
    def __init__(
        self,
        client: Connects,
        nursery: trio.Nursery,
        *,
        since: int | None,
        reconnect: bool,
        buffer: int = BUFFER,
    ) -> None:
        self.client = client
        self._nursery = nursery
        #: cur_max_message_id: every inbox seq up to it was handed to the application (or is
        #: one of this session's own acked sends).
        self.cursor: int | None = since
        self.reconnect = reconnect
        self.welcome: dict[str, Any] = {}
        self.synced = trio.Event()
        self.closed: ConnectionClosed | None = None
        self.connects = 0
        self._ws: WebSocketConnection | None = None
        self._pending: dict[str, tuple[dict[str, Any], trio.Event, list[Any]]] = {}
        self._pong: trio.Event | None = None
        self._in_send, self._in_recv = trio.open_memory_channel[dict[str, Any]](buffer)
        self._buffer = buffer
        #: frames were dropped on a full buffer: resync from the cursor once it is read down
        self._lagging = False
        #: inbox seqs of our own acked sends above the cursor: a replay skips them
        self._own: set[int] = set()
        self._read_scope: trio.CancelScope | None = None
        #: set while connected, and for good once the session is over
        self._up = trio.Event()
        self._done = False
        #: why the session is over: an error frame (refused) or the close it did not survive
        self._ended: dict[str, Any] | ConnectionClosed | None = None

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
        frame = frames.send_frame(ref or secrets.token_hex(8), to=to, channel=channel, body=body)
        return await self._request(frame)

    async def history(
        self, channel: str, *, before: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """One page of ``channel``, ascending: the newest, or the one just before ``before``.

        A page may hold fewer than ``limit`` messages even when more exist (the server also
        caps a page in bytes); :meth:`history_pages` walks a channel back to its start.
        """
        return (await self._history(channel, before, limit))["messages"]  # type: ignore[no-any-return]

    async def history_pages(
        self, channel: str, *, before: int | None = None, limit: int | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of ``channel`` from the newest (or from ``before``) back to its first message.

        Each request asks for what precedes the previous page's first msg_id, and the walk ends
        when the server says nothing more lies before (``more`` false), on an empty page, or if
        a page would not move back (so it never loops on the same request).
        """
        while True:
            reply = await self._history(channel, before, limit)
            page: list[dict[str, Any]] = reply["messages"]
            if not page or (before is not None and page[0]["msg_id"] >= before):
                return
            yield page
            if not reply.get("more"):
                return
            before = page[0]["msg_id"]

    async def _history(self, channel: str, before: int | None, limit: int | None) -> dict[str, Any]:
        frame = frames.history_frame(secrets.token_hex(8), channel, before=before, limit=limit)
        return await self._request(frame)

    async def ping(self) -> None:
        self._pong = trio.Event()
        await self.send_frame(frames.ping_frame())
        await self._pong.wait()
        self._raise_if_over()

    async def send_frame(self, frame: dict[str, Any]) -> None:
        """Send any frame as is (no ack tracking); waits while reconnecting."""
        await self._up.wait()
        self._raise_if_over()
        ws = self._ws
        if ws is None:
            # Reconnecting since ``_up`` was seen set (``Event.wait`` checkpoints even when
            # set). Found by ``python -m bench storm``: this was an AssertionError that ended
            # the whole session, from its heartbeat task.
            raise ConnectionClosed(CloseReason(1006, "reconnecting"))
        await self._send_on(ws, frame)

    async def _send_on(self, ws: WebSocketConnection, frame: dict[str, Any]) -> None:
        if self.client.binary:
            await ws.send_message(msgpack.packb(frame))
        else:
            await ws.send_message(json.dumps(frame, ensure_ascii=False, separators=(",", ":")))

    async def next_frame(self) -> dict[str, Any]:
        """The next server frame other than acks, replies and pongs (msg, presence, ...).

        Once the session is over and its buffer read: ChatError if the server refused it,
        else ``trio.EndOfChannel``."""
        try:
            frame = await self._in_recv.receive()
        except trio.EndOfChannel:
            if isinstance(self._ended, dict):
                raise ChatError(self._ended) from None
            raise
        if self._lagging and self._read_scope is not None:
            if self._in_recv.statistics().current_buffer_used <= self._buffer // 2:
                self._read_scope.cancel()  # caught up enough: resync from the cursor
        return frame

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """``msg`` frames, across reconnects, in inbox order. Ends when the session is closed;
        raises ChatError if the server refused it."""
        while True:
            try:
                frame = await self.next_frame()
            except trio.EndOfChannel:
                return
            if frame["type"] == "msg":
                yield frame

    async def aclose(self) -> None:
        self._done = True
        self._give_up(self._ended or ConnectionClosed(CloseReason(1000, "session closed")))
        await self._discard()
        self._nursery.cancel_scope.cancel()

    # -- internals
    async def _request(self, frame: dict[str, Any]) -> dict[str, Any]:
        self._raise_if_over()
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
            self._raise_if_over()
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
        """Connect, say hello, read the welcome; only then is the session up (``_up`` set):
        the hello must be the first frame, and a heartbeat or a send waiting for the
        reconnect would otherwise get in before it (the server then closes 4001, for good;
        found by ``python -m bench storm``, where every heartbeat is due at the reconnect)."""
        if self._up.is_set() and not self._done:
            self._up = trio.Event()  # an attempt that got that far failed after its welcome
        await self._discard()
        self._lagging = False  # the replay from the cursor brings whatever was dropped
        subprotocol = "chatd.v1.msgpack" if self.client.binary else "chatd.v1.json"
        ws = await open_websocket(self._nursery, self.client.ws_url, [subprotocol])
        assert self.client.token is not None  # session() logs in first
        hello = frames.hello_frame(self.client.token, self.cursor)
        self._ws = ws
        self.synced = trio.Event()
        await self._send_on(ws, hello)
        self.welcome = self._decode(await ws.get_message())
        if self.welcome.get("type") != "welcome":
            await ws.aclose()
            if self.welcome.get("code") in RETRY_HELLO_CODES:
                raise RefusedForNow(self.welcome)
            raise ChatError(self.welcome)
        if self.cursor is None:
            self.cursor = self.welcome["inbox_head"]
            self.synced.set()
        self.connects += 1
        self._up.set()
        for frame, _, _ in list(self._pending.values()):
            await self.send_frame(frame)

    def _decode(self, data: str | bytes) -> dict[str, Any]:
        if isinstance(data, bytes):
            return msgpack.unpackb(data, raw=False)  # type: ignore[no-any-return]
        return json.loads(data)  # type: ignore[no-any-return]

    async def _keep(self) -> None:
        """Read frames; on a drop, reconnect with jittered exponential backoff; after a lag,
        reconnect at once to resync from the cursor. Ends when the session is over."""
        delay = 0.1
        while not self._done and self._ws is not None:
            ws = self._ws  # aclose() may clear self._ws while we wait
            with trio.CancelScope() as scope:
                self._read_scope = scope
                try:
                    while True:
                        self._on_frame(self._decode(await ws.get_message()))
                        delay = 0.1
                except ConnectionClosed as exc:
                    if self._done:
                        return
                    self.closed = exc
                    code = exc.reason.code if exc.reason else 1006
                    if not self.reconnect or code not in RECONNECT_CODES:
                        await self._end(exc)
                        return
            self._read_scope = None
            self._up = trio.Event()
            resync = scope.cancelled_caught  # by next_frame(): the application caught up
            while not self._done:
                if not resync:
                    await trio.sleep(random.uniform(0, delay))  # full jitter
                    delay = min(delay * 2, 10.0)
                resync = False
                try:
                    await self._connect()
                    break
                except RefusedForNow:  # busy, or it missed our hello under load: back off
                    continue
                except ChatError as refused:  # the server answered hello with an error
                    await self._end(refused.frame)
                    return
                except ConnectionClosed as closed:
                    if closed.reason is not None and closed.reason.code in REFUSAL_CODES:
                        await self._end(closed)
                        return
                except (OSError, HandshakeError, trio.BrokenResourceError, trio.TooSlowError):
                    continue

    async def _heartbeat(self, interval: float) -> None:
        while self._ended is None:
            await trio.sleep(interval)
            if self._up.is_set() and self._ended is None:
                try:
                    await self.send_frame(frames.ping_frame())
                except ConnectionClosed:
                    pass  # _keep reconnects (or the session is over: the loop ends)
                except ChatError:
                    return  # refused for good

    async def _end(self, why: dict[str, Any] | ConnectionClosed) -> None:
        """The server refused the session or closed it for good: no more reconnects."""
        code = why.reason.code if isinstance(why, ConnectionClosed) and why.reason else None
        if code in REFUSAL_CODES:
            reason = why.reason.reason if isinstance(why, ConnectionClosed) and why.reason else ""
            why = {"type": "error", "code": REFUSAL_CODES[code], "message": reason or "refused"}
        self._give_up(why)
        await self._discard()

    def _give_up(self, why: dict[str, Any] | ConnectionClosed) -> None:
        """The session is over for good: wake every waiting request, sender and iterator."""
        if self._ended is None:
            self._ended = why
        self._in_send.close()
        self._up.set()
        if self._pong is not None:
            self._pong.set()
        for _, done, _ in self._pending.values():
            done.set()

    def _raise_if_over(self) -> None:
        if isinstance(self._ended, dict):
            raise ChatError(self._ended)
        if self._ended is not None:
            raise ConnectionClosed(self._ended.reason)

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        ref = frame.get("ref")
        if kind in ("ack", "history", "error") and ref in self._pending:
            _, done, box = self._pending[ref]
            box.append(frame)
            done.set()
            if kind == "ack" and frame["inbox"] > (self.cursor or 0):
                self._own.add(frame["inbox"])
                self._advance()
            return
        if kind == "pong":
            if self._pong is not None:
                self._pong.set()
            return
        if kind == "msg":
            self._on_msg(frame)
            return
        if kind == "synced":
            if not self._lagging:
                self._advance(frame["head"])
            self.synced.set()
        self._deliver(frame)

    def _on_msg(self, frame: dict[str, Any]) -> None:
        seq = frame["inbox"]
        if seq <= (self.cursor or 0):
            return  # had it already
        if seq in self._own:
            self._advance()  # our own send, replayed: its ack stood for it
        elif self._deliver(frame):
            # The server sends an inbox in order, so everything below seq was delivered (or
            # is our own); after a drop nothing is delivered until the resync.
            self._advance(seq)

    def _deliver(self, frame: dict[str, Any]) -> bool:
        """Hand a frame to the application; False if it was dropped (the buffer is full)."""
        if self._done or self._lagging:
            return False
        try:
            self._in_send.send_nowait(frame)
        except trio.WouldBlock:
            self._lagging = True
            return False
        return True

    def _advance(self, to: int | None = None) -> None:
        """Move the cursor to ``to`` (if given), then over our own sends that follow it."""
        if self.cursor is None:
            return
        cursor = self.cursor
        if to is not None and to > cursor:
            cursor = to
            if self._own:  # forget our own sends it jumped over
                self._own = {s for s in self._own if s > cursor}
        while cursor + 1 in self._own:
            cursor += 1
            self._own.discard(cursor)
        self.cursor = cursor
