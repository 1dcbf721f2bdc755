"""The Python client library against real sockets: HTTP retries, slow readers, lost tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from chatd.client import HttpClient
from chatd.client.http import ConnectionLost

# -- HTTP: a request that may have been processed is never sent twice


class TinyServer:
    """A loopback HTTP server that reads whole requests, counts them, and answers each with
    ``reply(n)`` (n = 1 for the first request): ``(bytes, keep_open)``, or None to close
    the connection without sending a byte."""

    def __init__(self, reply: Callable[[int], tuple[bytes, bool] | None]) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.closed = trio.Event()  # set each time the server closes a connection
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                await self._serve(stream)
        finally:
            self.closed.set()

    async def _serve(self, stream: trio.SocketStream) -> None:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buf) < length:
                buf += await stream.receive_some(65536)
            buf = buf[length:]
            self.requests.append(head.split(b"\r\n")[0])
            answer = self.reply(len(self.requests))
            if answer is None:
                return
            await stream.send_all(answer[0])
            if not answer[1]:
                return


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"


@asynccontextmanager
async def tiny_server(
    reply: Callable[[int], tuple[bytes, bool] | None],
) -> AsyncIterator[TinyServer]:
    server = TinyServer(reply)
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
        )
        server.port = listener.socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_non_idempotent_request_is_sent_once(method: str) -> None:
    async with tiny_server(lambda n: None) as srv:
        async with HttpClient(f"http://127.0.0.1:{srv.port}") as http:
            with pytest.raises(ConnectionLost) as err:
                await http.request(method, "/v1/groups", {"name": "g"})
    assert srv.requests == [f"{method} /v1/groups HTTP/1.1".encode()]
    assert "not retried" in str(err.value) and err.value.method == method


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
async def test_an_idempotent_request_is_retried_once(method: str) -> None:
    async with tiny_server(lambda n: None) as srv:
        async with HttpClient(f"http://127.0.0.1:{srv.port}") as http:
            with pytest.raises(ConnectionLost):
                await http.request(method, "/v1/me")
    assert srv.requests == [f"{method} /v1/me HTTP/1.1".encode()] * 2


async def test_an_idempotent_request_succeeds_on_the_retry() -> None:
    async with tiny_server(lambda n: None if n == 1 else (OK, True)) as srv:
        async with HttpClient(f"http://127.0.0.1:{srv.port}") as http:
            response = await http.request("GET", "/v1/me")
    assert response.status == 200 and response.json() == {}
    assert len(srv.requests) == 2


async def test_no_retry_once_part_of_the_response_arrived() -> None:
    part = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"
    async with tiny_server(lambda n: (part, False)) as srv:
        async with HttpClient(f"http://127.0.0.1:{srv.port}") as http:
            with pytest.raises(ConnectionLost):
                await http.request("GET", "/v1/me")
    assert len(srv.requests) == 1


async def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    """A keep-alive connection the server has since closed is noticed before a POST is
    written to it: the POST goes out once, on a new connection, and succeeds."""
    async with tiny_server(lambda n: (OK, False)) as srv:
        async with HttpClient(f"http://127.0.0.1:{srv.port}") as http:
            assert (await http.request("GET", "/v1/me")).status == 200
            await srv.closed.wait()
            assert (await http.request("POST", "/v1/groups", {"name": "g"})).status == 200
    assert srv.requests == [b"GET /v1/me HTTP/1.1", b"POST /v1/groups HTTP/1.1"]
