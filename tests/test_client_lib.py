"""The Python client library against real sockets: HTTP retries, slow readers, lost tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from chatd.client import ChatError, HttpClient
from chatd.client.http import ConnectionLost
from chatd.server import Server
from tests.conftest import make_config, make_user, running
from tests.wsraw import RawWs, close_all

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


# -- sessions: a slow reader loses nothing; a refused token ends the session with an error


async def test_a_reader_that_falls_behind_gets_every_message_once_in_order(
    server: Server,
) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    total = 2_500
    async with alice.session() as a, bob.session(buffer=200) as b:
        sent = trio.Semaphore(16)  # pipelined sends, so the backlog builds up quickly

        async def send(i: int) -> None:
            async with sent:
                await a.send(to="bob", body=f"m{i}", ref=f"r{i}")

        async with trio.open_nursery() as nursery:
            for i in range(total):
                nursery.start_soon(send, i)
        # bob's device has read everything the server wrote (a ping round trip after it),
        # without the application reading a single message: its buffer is full.
        await b.ping()
        assert b._in_recv.statistics().current_buffer_used == 200
        # Replies still flow while the application lags: bob can send, and his own message
        # does not come back to him as an incoming one.
        own = (await b.send(to="alice", body="still here"))["inbox"]
        await a.send(to="bob", body="last", ref="r-last")
        got = []
        with trio.fail_after(60):  # a guard: the assertion is on what arrives
            async with aclosing(b.messages()) as messages:
                async for msg in messages:
                    got.append(msg)
                    if msg["body"] == "last":
                        break
        assert [m["inbox"] for m in got] == [s for s in range(1, total + 3) if s != own]
        assert sorted(m["body"] for m in got[:-1]) == sorted(f"m{i}" for i in range(total))
        by_channel = [m["msg_id"] for m in got if m["channel"] == "dm:alice:bob"]
        assert by_channel == sorted(by_channel)
        assert b.connects >= 2  # it resynced from its cursor at least once
        await b.ping()
        left = [await b.next_frame() for _ in range(b._in_recv.statistics().current_buffer_used)]
        assert [f for f in left if f["type"] == "msg"] == []  # nothing more (synced frames)


async def test_a_revoked_token_ends_the_session_with_unauthorized(server: Server) -> None:
    alice = await make_user(server, "alice")
    await make_user(server, "bob")
    async with alice.session() as a:
        await a.send(to="bob", body="before")
        async with HttpClient(server.url, token=alice.token) as http:
            assert (await http.request("POST", "/v1/logout")).status == 204
        with trio.fail_after(10):  # a guard against a hang, not the assertion
            with pytest.raises(ChatError) as err:
                await a.send(to="bob", body="after")
            assert err.value.code == "unauthorized"
            with pytest.raises(ChatError) as err:
                async for _ in a.messages():
                    pass
            assert err.value.code == "unauthorized"
            with pytest.raises(ChatError):
                await a.send_frame({"type": "ping"})
        assert a.connects == 1 and server.app.sessions.count("alice") == 0


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Virtual time moves only once the loop has idled for half a real second (or on jump()),
    # so the client's reconnect backoff waits while loopback I/O goes on.
    return trio.testing.MockClock(autojump_threshold=0.5)


async def test_too_many_sessions_on_reconnect_ends_the_session(
    data_dir: Path, clock: trio.testing.MockClock
) -> None:
    config = make_config(data_dir, limits={"max_sessions_per_user": 1})
    async with running(config) as server:
        alice = await make_user(server, "alice")
        await make_user(server, "bob")
        hello = {"type": "hello", "token": alice.token}
        async with alice.session(heartbeat=None) as a:
            await a.send(to="bob", body="hi")
            (conn,) = server.app.sessions.devices("alice")
            conn.close(1001, "test drop")  # as a drain would: the session will reconnect
            # Another device takes the only slot while the session waits out its backoff.
            while True:
                other, _ = await RawWs.connect(server.port)
                assert other is not None
                await other.send(hello)
                if (await other.recv() or {}).get("type") == "welcome":
                    break
                await other.aclose()  # the dropped device was not gone yet
            clock.jump(1)
            with trio.fail_after(10):  # a guard against a hang, not the assertion
                with pytest.raises(ChatError) as err:
                    await a.send(to="bob", body="again")
            assert err.value.code == "too_many_sessions"
            assert a.connects == 1
            clock.jump(20)  # it does not try again: the other device keeps its slot
            await trio.testing.wait_all_tasks_blocked()
            assert server.app.sessions.devices("alice") != [] and a.connects == 1
            await other.aclose()
    await close_all()


async def test_a_json_session_sends_a_full_body_of_emoji(server: Server) -> None:
    """100,000 four-byte characters are 400 KB as UTF-8 but 1.2 MB as \\u escapes: the
    client must send UTF-8, or the server closes the frame as too big (1009)."""
    alice = await make_user(server, "alice")
    await make_user(server, "bob")
    body = "\U0001f600" * 100_000
    async with alice.session() as s:
        ack = await s.send(to="bob", body=body)
    assert ack["msg_id"] == 1
    async with HttpClient(server.url, token=alice.token) as http:
        page = await http.call("GET", "/v1/channels/dm:alice:bob/messages")
    assert page["messages"][0]["body"] == body
