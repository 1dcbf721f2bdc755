"""The HTTP/1.1 connection loop on h11: keep-alive, limits, timeouts, WebSocket hand-off.

One task per TCP connection reads requests with h11, routes them (``chatd/net/routing.py``), and
writes the responses. A ``GET /v1/ws`` upgrade leaves h11 behind: the socket and any bytes read
past the request go to ``chatd/net/websocket.py``.

Limits: request header block over 16 KiB -> 431; body over ``limits.max_request_body`` -> 413;
a response the client leaves unread for ``server.keepalive_timeout`` closes the connection;
each request (header block and body; every request, not only a connection's first) must
arrive within ``server.header_timeout`` of its first byte; an idle keep-alive connection waits
``server.keepalive_timeout`` for that first byte, then is closed.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import h11
import trio

from chatd.config import Config
from chatd.domain.errors import (
    BadRequest,
    ChatError,
    MethodNotAllowed,
    TooLarge,
    Unavailable,
)
from chatd.net import sockets as net
from chatd.net.admission import PER_IP_RETRY_AFTER
from chatd.net.echo import ECHO_PATH, start_echo
from chatd.net.handshake import Origins, handshake
from chatd.net.lifecycle import Lifecycle
from chatd.net.proxies import TrustedProxies, limit_key
from chatd.net.routing import (
    INTERNAL,
    WS_PATH,
    Request,
    Response,
    Text,
    error_response,
)
from chatd.net.websocket import WsServer

log = logging.getLogger("chatd.http")
MAX_HEADER_BYTES = 16 * 1024
LINGER_SECONDS, LINGER_BYTES = 2.0, 4 << 20
SERVER_HEADER = (b"server", b"chatd")
_internal_body = json.dumps(INTERNAL).encode()
INTERNAL_HEAD = (
    b"HTTP/1.1 500 Internal Server Error\r\nserver: chatd\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n" % len(_internal_body)
)
INTERNAL_RESPONSE = INTERNAL_HEAD + _internal_body


class ClientStalled(OSError):
    """The client stopped reading mid-response: dealt with like a client that went away."""


class HeadersTooLarge(ChatError):
    code, status = "too_large", 431


class NotImplementedHere(ChatError):
    code = "not_implemented"


class VersionNotSupported(ChatError):
    code = "http_version_not_supported"


HTTP_VERSIONS = (b"1.0", b"1.1")
#: h11's ``RemoteProtocolError.error_status_hint`` -> our error: 431 for an oversize header
#: block, 501 for a Transfer-Encoding other than one ``chunked``; anything else is a 400.
PROTOCOL_ERRORS: dict[int, type[ChatError]] = {431: HeadersTooLarge, 501: NotImplementedHere}


class Dispatcher(Protocol):
    """The routes (``chatd/net/api.py``)."""

    async def dispatch(self, request: Request) -> Response: ...


@dataclass(frozen=True, eq=False)
class HttpServer:
    """What every HTTP connection shares: config, lifecycle, the routes, the WebSocket side."""

    config: Config
    lifecycle: Lifecycle
    api: Dispatcher
    ws: WsServer
    origins: Origins
    websocket: bool = True  # False on a cluster's peer listener: HTTP only
    #: ``server.trusted_proxies``: whose forwarding header names the client (built here)
    proxies: TrustedProxies = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "proxies", TrustedProxies.from_config(self.config.server))
        if self.echo:
            log.warning("testing.websocket_echo is on: %s echoes anyone (tests only)", ECHO_PATH)

    @property
    def echo(self) -> bool:
        """Serve the test-only echo WebSocket (``testing.websocket_echo``)."""
        return self.websocket and self.config.testing.websocket_echo


class HttpConnection:
    def __init__(
        self, srv: HttpServer, sock: socket.socket, client: str, refusal: ChatError | None = None
    ) -> None:
        self.srv = srv
        self.sock = sock
        self.peer = client  # the socket's address
        self.client = client  # behind a trusted proxy: the client of the last request
        self.proxied = bool(srv.proxies) and srv.proxies.trusted(client)
        self.refusal = refusal  # read one request, answer this error, close
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.head = False  # the request being answered is a HEAD: headers only
        self.responded = False  # bytes of a response to the current request were sent
        self.handed_off = False  # the socket now belongs to a WebSocket task

    async def serve(self) -> None:
        """Serve requests until the peer leaves, a timeout, an error, or a WebSocket upgrade.

        The connection's last-resort handler is here: an unexpected exception anywhere in
        serving it (parsing, routing, responding) is logged once with the peer's address,
        answered 500 if no response has begun, and closes this connection only.
        """
        try:
            await self._serve()
        except OSError:
            pass  # the peer went away mid-write
        except Exception:
            log.exception("HTTP connection from %s failed", self.client)
            await self._internal_error()
        finally:
            if not self.handed_off:
                self.srv.lifecycle.connections.release(self.sock)  # counted at accept
                net.close(self.sock)

    async def _serve(self) -> None:
        cfg = self.srv.config.server
        lifecycle = self.srv.lifecycle
        while True:
            request = None
            try:
                with trio.move_on_after(cfg.header_timeout):
                    request = await self._read_request()
            except ChatError as exc:  # oversize headers or body, a bad request line
                await self._respond(error_response(exc), close=True)
                await self._linger()
                return
            except h11.RemoteProtocolError as exc:
                if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    error = PROTOCOL_ERRORS.get(exc.error_status_hint, BadRequest)
                    response = error_response(error(f"malformed HTTP request: {exc}"))
                    await self._respond(response, close=True)
                    await self._linger()
                return
            if request is None:
                return
            if self.proxied and self.refusal is None:
                self.client = request.client = self.srv.proxies.client(self.peer, request.headers)
                if not lifecycle.connections.speaks_for(self.sock, limit_key(self.client)):
                    self.refusal = Unavailable(
                        "too many connections from your address", retry_after=PER_IP_RETRY_AFTER
                    )
            if self.refusal is not None:
                await self._respond(error_response(self.refusal), close=True)
                return
            if request.path == WS_PATH and request.is_websocket() and self.srv.websocket:
                await self._upgrade(request)
                return
            if request.path == ECHO_PATH and request.is_websocket() and self.srv.echo:
                await self._upgrade(request)  # testing.websocket_echo: chatd/net/echo.py
                return
            lifecycle.http_busy += 1
            try:
                response = await self.srv.api.dispatch(request)
                await self._respond(response, close=lifecycle.draining)
            finally:
                lifecycle.http_busy -= 1
                lifecycle.check_idle()
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()
            self.head = self.responded = False
            begun = False
            with trio.move_on_after(cfg.keepalive_timeout):
                begun = await self._next_request_begins()
            if not begun:
                return

    async def _internal_error(self) -> None:
        """The last resort's answer: a 500 written without h11 (whose state may be what
        broke), unless part of a response already went out; then the connection closes."""
        if self.responded or self.handed_off:
            return
        self.responded = True
        with trio.move_on_after(LINGER_SECONDS):
            try:
                await net.send_all(self.sock, INTERNAL_HEAD if self.head else INTERNAL_RESPONSE)
                await self._linger()
            except OSError:
                pass

    async def _next_request_begins(self) -> bool:
        """Idle keep-alive: wait for the first byte of a next request (buffered or readable);
        True then. The caller bounds the wait with ``server.keepalive_timeout``; the request
        then gets ``server.header_timeout`` like the first, so trickling it in a byte at a
        time buys no more."""
        if not self.h11.trailing_data[0]:  # else pipelined behind the last request
            await trio.lowlevel.wait_readable(self.sock)
        return True

    async def _linger(self) -> None:
        """After an error response with the request unread: half-close and discard input for
        a moment, so the kernel does not answer the unread bytes with a reset that would
        destroy the response before the client reads it."""
        self.sock.shutdown(socket.SHUT_WR)
        discarded = 0
        with trio.move_on_after(LINGER_SECONDS):
            while discarded < LINGER_BYTES and (data := await net.recv(self.sock)):
                discarded += len(data)

    async def _upgrade(self, request: Request) -> None:
        """Answer 101 and hand the socket to a new WebSocket task, or answer an error.

        This task then ends, so nothing of the HTTP exchange (h11 state, request headers, this
        coroutine's frames) stays alive for the life of the WebSocket.
        """
        try:
            if request.method != "GET":
                raise MethodNotAllowed("WebSocket upgrades must use GET")
            if self.srv.lifecycle.draining:
                raise Unavailable("draining")
            headers, binary = handshake(self.srv.origins, request.headers)
        except ChatError as exc:
            await self._respond(error_response(exc), close=True)
            return
        out = self.h11.send(h11.InformationalResponse(status_code=101, headers=headers))
        self.responded = True
        await net.send_all(self.sock, out)
        if request.path == ECHO_PATH:
            start_echo(self.srv.ws, self.sock, self.h11.trailing_data[0], self.client)
        else:
            self.srv.ws.start(self.sock, binary, self.h11.trailing_data[0], self.client)
        self.handed_off = True

    async def _next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await net.recv(self.sock)
            self.h11.receive_data(data)

    async def _read_request(self) -> Request | None:
        event = await self._next_event()
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None
        assert isinstance(event, h11.Request)
        self.head = event.method == b"HEAD"
        # h11 only caps an *incomplete* header block; one that arrived whole is measured here.
        size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
        if size > MAX_HEADER_BYTES:
            raise HeadersTooLarge("request header block over 16 KiB")
        if event.http_version not in HTTP_VERSIONS:
            version = event.http_version.decode("ascii")
            raise VersionNotSupported(f"HTTP/{version} is not supported: use HTTP/1.1")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
        try:
            target = urlsplit(event.target.decode("latin-1"))
        except ValueError as exc:
            raise BadRequest(f"malformed request target: {exc}") from None
        request = Request(
            method=event.method.decode("ascii"),
            path=target.path,
            query=parse_qs(target.query),
            headers=headers,
            client=self.client,
        )
        limit = self.srv.config.limits.max_request_body
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise TooLarge(f"request body over {limit} bytes")
        if self.h11.they_are_waiting_for_100_continue:  # ``Expect: 100-continue``: go ahead
            await net.send_all(
                self.sock, self.h11.send(h11.InformationalResponse(status_code=100, headers=[]))
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise TooLarge(f"request body over {limit} bytes")
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return None
        request.body = b"".join(chunks)
        return request

    async def _respond(self, response: Response, *, close: bool = False) -> None:
        headers = [SERVER_HEADER, *response.headers]
        if isinstance(response.payload, Text):
            body = response.payload.body
            headers.append((b"content-type", response.payload.content_type))
        elif response.payload is not None:
            body = json.dumps(response.payload).encode()
            headers.append((b"content-type", b"application/json"))
        else:
            body = b""
        if response.status not in (204, 304):  # neither may declare a length of 0
            headers.append((b"content-length", str(len(body)).encode()))
        if close:
            headers.append((b"connection", b"close"))
        reason = HTTPStatus(response.status).phrase.encode()
        head = h11.Response(status_code=response.status, headers=headers, reason=reason)
        out = self.h11.send(head)
        if body and not self.head:  # a HEAD answer declares the GET body's length only
            out += self.h11.send(h11.Data(data=body))
        out += self.h11.send(h11.EndOfMessage())
        self.responded = True
        with trio.move_on_after(self.srv.config.server.keepalive_timeout):
            await net.send_all(self.sock, out)
            return
        raise ClientStalled(f"{self.client} did not read a response within keepalive_timeout")
