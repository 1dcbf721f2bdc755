"""WebSocket connection shell hardening: fragment and byte accounting, pipelined hello,
last-resort handling of bugs, and cleanup of closed connections."""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from chatd.client import HttpClient
from chatd.net.reassembly import MAX_FRAGMENTS
from chatd.net.websocket import Conn
from chatd.server import Server
from tests import wsraw
from tests.conftest import make_config, make_user, running
from tests.test_ws_errors import hello, still_open, wait_for
from tests.wsraw import RawWs, client_frame

MIB = 1 << 20


@pytest.fixture
async def server(data_dir: Path) -> AsyncIterator[Server]:
    """The shared fixture, closing this test's raw sockets before the drain (which would
    otherwise wait up to 2 s for each one to answer its close frame). An autouse async
    fixture would not do: pytest-trio runs only the fixtures a test asks for."""
    async with running(make_config(data_dir)) as srv:
        try:
            yield srv
        finally:
            await wsraw.close_all()


@pytest.fixture
def slow_clock() -> trio.testing.MockClock:
    # Jumps only when the loop has been idle for real 50 ms, so loopback I/O completes first
    # and a server that waits for bytes that never come hits its hello timeout at once.
    return trio.testing.MockClock(autojump_threshold=0.05)


async def raw(server: Server, **kw: Any) -> RawWs:
    ws, head = await RawWs.connect(server.port, **kw)
    assert ws is not None, head
    return ws


# -- item 1: fragments


async def test_a_flood_of_empty_fragments_before_hello_closes_1009(
    server: Server, slow_clock: trio.testing.MockClock
) -> None:
    """16k empty continuation frames (96 KB on the wire, before any hello) are refused after
    the fragment cap, each fragment O(1); the server keeps serving."""
    alice = await make_user(server, "alice")
    ws = await raw(server)
    flood = client_frame(0x1, b"", fin=False) + client_frame(0x0, b"", fin=False) * 16_000
    await ws.send_raw(flood + client_frame(0x0, b"", fin=True))
    assert await ws.recv_until_closed() == []
    assert ws.close_code == 1009
    other = await hello(server, alice)
    await still_open(other)


async def test_a_message_at_the_fragment_cap_is_accepted(server: Server) -> None:
    """A message in exactly MAX_FRAGMENTS frames (one byte each, plus pings in between) works;
    the pieces are kept as bytes, whatever their number."""
    alice = await make_user(server, "alice")
    ws = await hello(server, alice)
    empty = len(json.dumps({"type": "ping", "pad": ""}))
    payload = json.dumps({"type": "ping", "pad": "x" * (MAX_FRAGMENTS - empty)}).encode()
    assert len(payload) == MAX_FRAGMENTS
    pieces = [payload[i : i + 1] for i in range(len(payload))]
    data = client_frame(0x1, pieces[0], fin=False)
    for i, piece in enumerate(pieces[1:-1], 1):
        data += client_frame(0x0, piece, fin=False)
        if i % 100 == 0:  # control frames may come between fragments
            data += client_frame(0x9, b"hb")
    await ws.send_raw(data + client_frame(0x0, pieces[-1], fin=True))
    assert await ws.recv() == {"type": "pong"}
    await still_open(ws)


async def test_one_fragment_over_the_cap_closes_1009(server: Server) -> None:
    alice = await make_user(server, "alice")
    ws = await hello(server, alice)
    data = client_frame(0x2, b"\x81", fin=False)
    data += client_frame(0x0, b"", fin=False) * (MAX_FRAGMENTS - 1)
    await ws.send_raw(data + client_frame(0x0, b"", fin=True))
    assert await ws.recv_until_closed() == []
    assert ws.close_code == 1009


async def test_fragments_count_bytes_across_the_message(server: Server) -> None:
    """Many small fragments still add up to the byte cap (no reset per fragment)."""
    alice = await make_user(server, "alice")
    ws = await hello(server, alice)
    piece = b" " * (MIB // 512)
    data = client_frame(0x1, b"[", fin=False)
    data += client_frame(0x0, piece, fin=False) * 512
    await ws.send_raw(data + client_frame(0x0, b"]", fin=True))
    assert await ws.recv_until_closed() == []
    assert ws.close_code == 1009


# -- item 2: the frame cap counts bytes


async def test_text_frame_over_the_cap_in_bytes_closes_1009(server: Server) -> None:
    """700k three-byte characters are 2.1 MB: over the 1 MiB cap although under 1M characters."""
    ws = await raw(server)
    frame = json.dumps({"type": "hello", "token": "\u20ac" * 700_000}, ensure_ascii=False)
    await ws.send_raw(client_frame(0x1, frame.encode()))
    assert await ws.recv_until_closed() == []
    assert ws.close_code == 1009


async def test_text_frame_over_the_cap_in_bytes_fragmented_closes_1009(server: Server) -> None:
    alice = await make_user(server, "alice")
    ws = await hello(server, alice)
    chars = "\u20ac" * 200_000  # 600 KB per fragment, 200k characters
    await ws.send_raw(client_frame(0x1, ('{"type":"ping","a":"' + chars).encode(), fin=False))
    await ws.send_raw(client_frame(0x0, (chars + '"}').encode()))
    assert await ws.recv_until_closed() == []
    assert ws.close_code == 1009


@pytest.mark.parametrize("char", ["x", "\u00e9", "\u20ac", "\U0001f600"])
async def test_frames_up_to_the_cap_in_bytes_are_accepted(server: Server, char: str) -> None:
    """A frame of exactly max_frame_bytes is accepted, whatever its characters; one byte more
    closes 1009."""
    alice = await make_user(server, "alice")
    ws = await hello(server, alice)
    head, tail = '{"type":"ping","pad":"', '"}'
    room = MIB - len(head) - len(tail)
    width = len(char.encode())
    pad = char * (room // width) + "y" * (room % width)
    payload = (head + pad + tail).encode()
    assert len(payload) == MIB
    await ws.send_raw(client_frame(0x1, payload))
    assert await ws.recv() == {"type": "pong"}
    payload = (head + pad + "y" + tail).encode()
    await ws.send_raw(client_frame(0x1, payload))
    assert await ws.recv_until_closed() == []
    assert ws.close_code == 1009


# -- item 3: bytes that came with the upgrade request


async def test_hello_pipelined_with_the_upgrade_request_gets_welcome(
    server: Server, slow_clock: trio.testing.MockClock
) -> None:
    alice = await make_user(server, "alice")
    hello_frame = json.dumps({"type": "hello", "token": alice.token}).encode()
    ping = json.dumps({"type": "ping"}).encode()
    ws = await raw(server, extra=client_frame(0x1, hello_frame) + client_frame(0x1, ping))
    welcome = await ws.recv()
    assert welcome is not None and welcome["type"] == "welcome", welcome
    assert await ws.recv() == {"type": "pong"}
    await still_open(ws)


async def test_bad_frame_pipelined_with_the_upgrade_request_is_answered(
    server: Server, slow_clock: trio.testing.MockClock
) -> None:
    ws = await raw(server, extra=client_frame(0x1, b'{"type":"ping"}'))
    frames = await ws.recv_until_closed()
    assert [f["code"] for f in frames] == ["unauthorized"]
    assert ws.close_code == 4001


# -- item 4: a bug ends one connection, never the server


async def server_still_serves(server: Server, ws: RawWs) -> None:
    """/healthz answers and an untouched connection still sends and gets its ack."""
    async with HttpClient(server.url) as http:
        assert (await http.request("GET", "/healthz")).status == 200
    await ws.send({"type": "send", "ref": "after", "to": "alice", "body": "still here"})
    ack = await ws.recv()
    assert ack is not None and ack["type"] == "ack" and ack["ref"] == "after", ack


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "chatd.ws" and r.levelno >= logging.ERROR]


async def test_a_bug_while_syncing_closes_that_connection_1011(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the replay path (outside any frame handler) is logged once with the peer
    address and closes that connection with 1011; other connections keep working."""
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    other = await hello(server, bob)

    def broken(conn: Conn) -> None:
        raise RuntimeError("bug in presence")

    monkeypatch.setattr(server.app.presence, "snapshot", broken)
    ws = await raw(server)
    await ws.send({"type": "hello", "token": alice.token, "since": 0})
    frames = await ws.recv_until_closed()
    assert [f["type"] for f in frames] == ["welcome", "synced"]
    assert ws.close_code == 1011
    [record] = failures(caplog)
    assert "127.0.0.1" in record.getMessage() and record.exc_info is not None
    await wait_for(lambda: server.app.sessions.count("alice") == 0)
    await server_still_serves(server, other)


async def test_a_bug_while_leaving_still_cleans_up(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the bookkeeping after a close: logged, the socket still closed and counted."""
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    other = await hello(server, bob)

    def broken(conn: Conn, *, timed_out: bool) -> None:
        raise RuntimeError("bug in presence")

    monkeypatch.setattr(server.app.presence, "disconnected", broken)
    ws = await hello(server, alice)
    await ws.aclose()
    await wait_for(lambda: len(server.app.ws.conns) == 1)
    assert server.app.open_connections == 1
    [record] = failures(caplog)
    assert "127.0.0.1" in record.getMessage()
    monkeypatch.undo()
    await server_still_serves(server, other)


async def test_a_bug_in_the_flusher_closes_only_that_connection(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The flusher runs in the shared nursery: a bug there must end its connection only."""
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    await make_user(server, "carol")
    slow = await hello(server, bob)  # never reads: its kernel buffer fills, a flusher starts
    drain = Conn._drain

    async def broken(self: Conn) -> None:
        if self.user_id == "bob":
            raise RuntimeError("bug in the flusher")
        await drain(self)

    monkeypatch.setattr(Conn, "_drain", broken)
    async with alice.session() as a:
        for i in range(400):
            if server.app.sessions.count("bob") == 0:
                break
            await a.send(to="bob", body=f"{i}:" + "y" * 60_000)
        assert server.app.sessions.count("bob") == 0
        await slow.recv_until_closed()
        assert slow.close_code in (1006, 1011)
        [record] = failures(caplog)
        assert "127.0.0.1" in record.getMessage() and "bob" in record.getMessage()
        await a.send(to="carol", body="after")
    carol = await hello(server, await make_user(server, "dave"))
    await server_still_serves(server, carol)


# -- item 5: closed connections are let go at once


async def test_closed_connections_leave_the_wheel_and_are_freed(server: Server) -> None:
    alice = await make_user(server, "alice")
    heartbeats = server.app.heartbeats

    def in_wheel() -> int:
        return heartbeats.watched()

    keep = await hello(server, alice)
    [kept] = server.app.ws.conns
    sockets = [await hello(server, alice) for _ in range(8)]
    held = next(c for c in server.app.ws.conns if c is not kept)  # this test keeps a reference
    assert in_wheel() == 9
    for ws in sockets:
        await ws.aclose()
    await wait_for(lambda: server.app.ws.conns == {kept})
    assert in_wheel() == 1  # only the open one: the closed left at once, not after 30 s
    gc.collect()
    closed = [
        o
        for o in gc.get_objects()
        if isinstance(o, Conn) and o.srv is server.app.ws and o is not kept and o is not held
    ]
    assert closed == []  # the other 7 are gone: nothing refers to them any more
    # A finished connection keeps no buffers or protocol state, whoever still refers to it.
    assert held.out is None and held.partial is None and held.drained is None
    assert not hasattr(held, "ws")
    await still_open(keep)
