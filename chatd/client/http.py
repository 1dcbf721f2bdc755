"""A small HTTP/1.1 client on trio + h11, enough for chatd's JSON API (keep-alive, one
request at a time per client)."""

from __future__ import annotations

import json
import select
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
import trio


class HttpError(Exception):
    """An error response from the server: ``status`` plus the contract's error body."""

    def __init__(self, response: HttpResponse) -> None:
        body = response.json() if response.body else {}
        super().__init__(f"{response.status} {body.get('error')}: {body.get('message')}")
        self.response = response
        self.status = response.status
        self.code = body.get("error")


class ConnectionLost(ConnectionError):
    """The connection closed (or broke) before a complete response arrived.

    An idempotent request (GET, HEAD, PUT, DELETE) is retried once on a new connection first,
    if no byte of the response had arrived; any other request (POST, PATCH) is never sent
    twice, since the server may have processed it.
    """

    def __init__(self, method: str, path: str, *, retried: bool, idempotent: bool) -> None:
        if idempotent:
            tail = "after one retry" if retried else "part of the response had arrived"
        else:
            tail = f"not retried: {method} is not idempotent and the server may have processed it"
        super().__init__(f"{method} {path}: connection lost before a complete response ({tail})")
        self.method = method
        self.path = path


IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpClient:
    """``async with HttpClient("http://127.0.0.1:8080") as http: await http.request(...)``."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.token = token
        self.timeout = timeout
        self._stream: trio.SocketStream | None = None
        self._conn: h11.Connection | None = None
        self._response_started = False

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
        self._stream = self._conn = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> HttpResponse:
        """Send one request; the response whatever its status (see :meth:`call`).

        A kept-alive connection the server has closed meanwhile is noticed before it is
        reused. If the connection is lost before a complete response, an idempotent request
        is sent again once on a new connection (only if no byte of the response had arrived);
        otherwise :class:`ConnectionLost` is raised.
        """
        idempotent = method.upper() in IDEMPOTENT
        with trio.fail_after(self.timeout):
            for attempt in (1, 2):
                if self._stream is not None and self._closed_by_peer():
                    await self.aclose()
                if self._stream is None:
                    self._stream = await trio.open_tcp_stream(self.host, self.port)
                    self._conn = h11.Connection(h11.CLIENT)
                self._response_started = False
                try:
                    return await self._exchange(method, path, body, raw, headers or {}, token)
                except (trio.BrokenResourceError, h11.RemoteProtocolError, ConnectionError) as exc:
                    await self.aclose()
                    if idempotent and attempt == 1 and not self._response_started:
                        continue
                    lost = ConnectionLost(method, path, retried=attempt == 2, idempotent=idempotent)
                    raise lost from exc
        raise AssertionError("unreachable")

    def _closed_by_peer(self) -> bool:
        """Whether the idle connection is readable: between requests that can only mean the
        server closed it (or sent something unasked), so it must not carry a request."""
        assert self._stream is not None
        poller = select.poll()
        poller.register(self._stream.socket.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        """Like :meth:`request`, but returns the decoded JSON and raises HttpError on 4xx/5xx."""
        response = await self.request(method, path, body, **kw)
        if response.status >= 400:
            raise HttpError(response)
        return response.json() if response.body else None

    async def _exchange(
        self,
        method: str,
        path: str,
        body: Any,
        raw: bytes | None,
        extra: dict[str, str],
        token: str | None,
    ) -> HttpResponse:
        assert self._stream is not None and self._conn is not None
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        headers = [("host", f"{self.host}:{self.port}"), ("content-length", str(len(data)))]
        if body is not None:
            headers.append(("content-type", "application/json"))
        token = token or self.token
        if token:
            headers.append(("authorization", f"Bearer {token}"))
        headers.extend(extra.items())
        conn = self._conn
        out = conn.send(h11.Request(method=method, target=path, headers=headers))
        out += conn.send(h11.Data(data=data)) if data else b""
        out += conn.send(h11.EndOfMessage())
        await self._stream.send_all(out)
        status, resp_headers, chunks = 0, {}, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                chunk = await self._stream.receive_some(65536)
                self._response_started = self._response_started or bool(chunk)
                conn.receive_data(chunk)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                resp_headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise trio.BrokenResourceError("server closed the connection")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            await self.aclose()
        return HttpResponse(status, resp_headers, b"".join(chunks))
