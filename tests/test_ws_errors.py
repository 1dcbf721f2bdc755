"""WebSocket bad input, limits and lifecycle: every case gets the contract's error frame or
close code, and the server and other connections keep working."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from chatd.client import ChatClient, HttpClient
from chatd.server import Server
from tests import wsraw
from tests.conftest import make_config, make_user, running
from tests.wsraw import RawWs, client_frame


@pytest.fixture(autouse=True)
async def close_raw_sockets() -> AsyncIterator[None]:
    yield
    await wsraw.close_all()


async def hello(server: Server, client: ChatClient, **kw: Any) -> RawWs:
    ws, head = await RawWs.connect(server.port, **kw)
    assert ws is not None, head
    await ws.send({"type": "hello", "token": client.token})
    welcome = await ws.recv()
    assert welcome is not None and welcome["type"] == "welcome", welcome
    return ws


async def still_open(ws: RawWs) -> None:
    await ws.send({"type": "ping"})
    assert await ws.recv() == {"type": "pong"}


async def wait_for(predicate: Any) -> None:
    """Poll server state that has no event of its own (e.g. a connection's cleanup)."""
    with trio.fail_after(5):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ([1, 2], "bad_request"),
        ("just a string", "bad_request"),
        ({"no": "type"}, "bad_request"),
        ({"type": 7}, "bad_request"),
        ({"type": "dance"}, "bad_request"),
        ({"type": "send", "to": "bob", "body": "x"}, "bad_request"),
        ({"type": "send", "ref": "r", "body": "x"}, "bad_request"),
        (
            {"type": "send", "ref": "r", "to": "bob", "channel": "dm:alice:bob", "body": "x"},
            "bad_request",
        ),
        ({"type": "send", "ref": "r", "to": "bob", "body": 5}, "bad_request"),
        ({"type": "send", "ref": "r" * 65, "to": "bob", "body": "x"}, "bad_request"),
        ({"type": "send", "ref": "r", "to": "alice", "body": "x"}, "bad_request"),
        ({"type": "send", "ref": "r", "to": "nobody", "body": "x"}, "not_found"),
        ({"type": "send", "ref": "r", "to": "Bad Id", "body": "x"}, "bad_request"),
        ({"type": "send", "ref": "r", "to": "bob", "body": "x" * 100_001}, "too_large"),
        ({"type": "send", "ref": "r", "channel": "dm:bob:carol", "body": "x"}, "forbidden"),
        ({"type": "send", "ref": "r", "channel": "g:nope", "body": "x"}, "not_found"),
        ({"type": "history", "ref": "h", "channel": "dm:bob:carol"}, "forbidden"),
        ({"type": "history", "ref": "h", "channel": "dm:alice:bob", "limit": "9"}, "bad_request"),
        ({"type": "history", "ref": "h", "channel": "dm:alice:bob", "before": -1}, "bad_request"),
        ({"type": "hello", "token": "again"}, "bad_request"),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_stays(
    server: Server, frame: Any, code: str
) -> None:
    alice = await make_user(server, "alice")
    await make_user(server, "bob")
    await make_user(server, "carol")
    ws = await hello(server, alice)
    await ws.send(frame)
    error = await ws.recv()
    assert error is not None and error["type"] == "error" and error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    if isinstance(frame, dict) and isinstance(frame.get("ref"), str) and len(frame["ref"]) <= 64:
        assert error["ref"] == frame["ref"]
    await still_open(ws)
    # Nothing was stored by the refused frame.
    assert server.app.store.channel_last_id("dm:alice:bob") == 0
    await ws.aclose()


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b'{"type": "send", "ref": "\\ud800", "to": "bob", "body": "x"}'],
)
async def test_invalid_json_text(server: Server, payload: bytes) -> None:
    alice = await make_user(server, "alice")
    await make_user(server, "bob")
    ws = await hello(server, alice)
    await ws.send_raw(client_frame(0x1, payload))
    error = await ws.recv()
    assert error is not None and error["code"] == "bad_request"
    await still_open(ws)


async def test_invalid_msgpack_binary(server: Server) -> None:
    alice = await make_user(server, "alice")
    ws = await hello(server, alice, protocol="chatd.v1.msgpack")
    await ws.send_raw(client_frame(0x2, b"\xc1\xc1\xc1"))
    error = await ws.recv()
    assert error is not None and error["code"] == "bad_request"
    await still_open(ws)


async def test_invalid_utf8_closes_1007(server: Server) -> None:
    alice = await make_user(server, "alice")
    ws = await hello(server, alice)
    await ws.send_raw(client_frame(0x1, b'{"type":"ping","x":"\xff\xfe"}'))
    assert await ws.recv_until_closed() == []
    assert ws.close_code == 1007


async def test_frame_over_1_mib_closes_1009(server: Server) -> None:
    alice = await make_user(server, "alice")
    ws = await hello(server, alice)
    # Two fragments, each under the limit, together over it.
    await ws.send_raw(client_frame(0x1, b"[" + b" " * 600_000, fin=False))
    await ws.send_raw(client_frame(0x0, b" " * 600_000 + b"]"))
    await ws.recv_until_closed()
    assert ws.close_code == 1009


async def test_bad_token_closes_4001(server: Server) -> None:
    ws, _ = await RawWs.connect(server.port)
    assert ws is not None
    await ws.send({"type": "hello", "token": "not-a-token"})
    frames = await ws.recv_until_closed()
    assert [f["code"] for f in frames] == ["unauthorized"]
    assert ws.close_code == 4001


async def test_first_frame_must_be_hello(server: Server) -> None:
    ws, _ = await RawWs.connect(server.port)
    assert ws is not None
    await ws.send({"type": "ping"})
    frames = await ws.recv_until_closed()
    assert frames[0]["type"] == "error" and ws.close_code == 4001


@pytest.fixture
def slow_clock() -> trio.testing.MockClock:
    # Jumps only when the loop has been idle for real 50 ms, so loopback I/O completes first.
    return trio.testing.MockClock(autojump_threshold=0.05)


async def test_no_hello_within_10s_closes_1008(
    server: Server, slow_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    ws, _ = await RawWs.connect(server.port)
    assert ws is not None
    frames = await ws.recv_until_closed()
    assert ws.close_code == 1008
    assert frames and frames[0]["type"] == "error"
    assert 10 <= trio.current_time() - start < 11


async def test_session_cap(data_dir: Path) -> None:
    async with running(make_config(data_dir, limits={"max_sessions_per_user": 2})) as server:
        alice = await make_user(server, "alice")
        first, second = await hello(server, alice), await hello(server, alice)
        ws, _ = await RawWs.connect(server.port)
        assert ws is not None
        await ws.send({"type": "hello", "token": alice.token})
        frames = await ws.recv_until_closed()
        assert [f["code"] for f in frames] == ["too_many_sessions"]
        assert ws.close_code == 1008
        await still_open(first)
        await first.aclose()
        await wait_for(lambda: server.app.sessions.count("alice") == 1)
        third = await hello(server, alice)
        await still_open(third)
        await still_open(second)


async def test_send_rate_limit_answers_rate_limited(data_dir: Path) -> None:
    config = make_config(data_dir, limits={"send_rate": 1.0, "send_burst": 3})
    async with running(config) as server:
        alice = await make_user(server, "alice")
        await make_user(server, "bob")
        ws = await hello(server, alice)
        for i in range(4):
            await ws.send({"type": "send", "ref": f"r{i}", "to": "bob", "body": "x"})
        # The refusal is immediate; acks follow their commit.
        replies = sorted([await ws.recv() for _ in range(4)], key=lambda r: r["ref"] if r else "")
        assert [r["type"] for r in replies if r] == ["ack", "ack", "ack", "error"]
        limited = replies[3]
        assert limited is not None and limited["code"] == "rate_limited"
        assert limited["ref"] == "r3" and isinstance(limited["retry_after"], int)
        assert limited["retry_after"] > 0
        await still_open(ws)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        ("http://evil.example", False),
        ("null", False),
        ("same", True),
        ("http://app.example", True),
    ],
)
async def test_origin_check(data_dir: Path, origin: str | None, allowed: bool) -> None:
    config = make_config(data_dir, server={"allowed_origins": ("http://app.example",)})
    async with running(config) as server:
        if origin == "same":
            origin = f"http://127.0.0.1:{server.port}"
        ws, head = await RawWs.connect(server.port, origin=origin)
        if allowed:
            assert ws is not None, head
            await ws.aclose()
        else:
            assert ws is None
            status_line, _, rest = head.partition(b"\r\n")
            assert status_line.startswith(b"HTTP/1.1 403")
            body = json.loads(rest.partition(b"\r\n\r\n")[2])
            assert body["error"] == "forbidden"


async def test_subprotocol_negotiation(server: Server) -> None:
    ws, head = await RawWs.connect(server.port, protocol="chatd.v1.msgpack")
    assert ws is not None and b"sec-websocket-protocol: chatd.v1.msgpack" in head.lower()
    await ws.aclose()
    ws, head = await RawWs.connect(server.port)
    assert ws is not None and b"sec-websocket-protocol" not in head.lower()
    await ws.aclose()


async def test_logout_closes_that_tokens_sessions_4001(server: Server) -> None:
    alice = await make_user(server, "alice")
    other_token = ChatClient(server.url, "alice", alice.password)
    await other_token.login()
    ws = await hello(server, alice)
    keep = await hello(server, other_token)
    async with HttpClient(server.url, token=alice.token) as http:
        assert (await http.request("POST", "/v1/logout")).status == 204
    await ws.recv_until_closed()
    assert ws.close_code == 4001
    await still_open(keep)


async def test_drain_closes_websockets_1001(data_dir: Path) -> None:
    async with running(make_config(data_dir)) as server:
        alice = await make_user(server, "alice")
        ws = await hello(server, alice)
        server.drain()
        await ws.recv_until_closed()
        assert ws.close_code == 1001


async def test_slow_consumer_is_closed_1008_and_resyncs(data_dir: Path) -> None:
    config = make_config(data_dir, limits={"outbound_queue_bytes": 64 * 1024})
    async with running(config) as server:
        alice = await make_user(server, "alice")
        bob = await make_user(server, "bob")
        slow = await hello(server, bob)  # never reads while alice sends
        body = "y" * 90_000
        async with alice.session() as a:
            for i in range(300):
                await a.send(to="bob", body=f"{i}:{body}")
            # Alice's own traffic was never held up by bob's full queue.
            assert (await a.history("dm:alice:bob", limit=1))[0]["msg_id"] == 300
        got = await slow.recv_until_closed()
        # It reads only after alice's last send, by when the server may have given up on
        # flushing the close frame (CLOSE_FLUSH_TIMEOUT): the socket is then reset instead.
        assert slow.close_code in (1008, 1006)
        assert len(got) < 300
        seqs = [f["inbox"] for f in got]
        assert seqs == list(range(1, len(seqs) + 1))
        async with bob.session(since=seqs[-1] if seqs else 0) as b:
            rest = []
            with trio.fail_after(20):
                while len(rest) < 300 - len(seqs):
                    frame = await b.next_frame()
                    if frame["type"] == "msg":
                        rest.append(frame["inbox"])
            assert rest == list(range(len(seqs) + 1, 301))


async def test_session_table_does_not_leak(server: Server) -> None:
    alice = await make_user(server, "alice")
    await make_user(server, "bob")
    # A clean close, an abrupt TCP close, a connection that never says hello, a client
    # library session, and one cancelled mid-send.
    ws = await hello(server, alice)
    await ws.aclose()
    ws = await hello(server, alice)
    ws.stream.socket.close()
    pre, _ = await RawWs.connect(server.port)
    assert pre is not None
    await pre.aclose()
    async with alice.session() as s:
        await s.send(to="bob", body="x")
    with trio.move_on_after(0.05):
        async with alice.session() as s:
            while True:
                await s.send(to="bob", body="y")
    await wait_for(lambda: not server.app.ws.conns)
    assert server.app.sessions.users() == 0
    assert list(server.app.sessions) == []
    # The server still works.
    ws = await hello(server, alice)
    await still_open(ws)


async def test_connections_over_max_are_refused_at_accept(data_dir: Path) -> None:
    async with running(make_config(data_dir, server={"max_connections": 2})) as server:
        first, _ = await RawWs.connect(server.port)
        second, _ = await RawWs.connect(server.port)
        assert first is not None and second is not None
        third, head = await RawWs.connect(server.port)
        assert third is None and head == b"\r\n\r\n"  # closed without a response
        assert server.app.refused_connections == 1
        await first.aclose()
        await wait_for(lambda: server.app.open_connections == 1)
        fourth, _ = await RawWs.connect(server.port)
        assert fourth is not None


async def test_pipelined_sends_past_the_inflight_cap_are_all_acked(server: Server) -> None:
    """A client that pipelines more sends than a connection may have un-acked is slowed down
    (the server stops reading), not refused: every send is acked, in order."""
    alice = await make_user(server, "alice")
    await make_user(server, "bob")
    ws = await hello(server, alice)
    frames = [{"type": "send", "ref": f"p{i}", "to": "bob", "body": f"{i}"} for i in range(700)]
    with trio.fail_after(30):
        for frame in frames:  # all written before any ack is read
            await ws.send(frame)
        acks = [await ws.recv() for _ in frames]
    assert [a["type"] for a in acks if a] == ["ack"] * 700
    assert [a["msg_id"] for a in acks if a] == list(range(1, 701))
    await still_open(ws)
