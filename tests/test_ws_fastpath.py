"""The WebSocket fast path (chatd/net/websocket.py ``Conn._on_bytes``) against wsproto itself.

Small whole text, binary and ping frames are parsed without wsproto; anything else is handed to
wsproto from that frame on. These tests check the seams: frames split anywhere across reads,
every mask, a fall-back in the middle of a read, and, for each input wsproto refuses, the same
close code as a wsproto server gives it (computed here by feeding wsproto the same bytes).
"""

from __future__ import annotations

import json
import struct

import pytest
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection
from wsproto.utilities import RemoteProtocolError

from chatd.server import Server
from tests.conftest import make_user
from tests.test_ws_errors import hello, still_open
from tests.wsraw import RawWs, client_frame

PING_JSON = json.dumps({"type": "ping"}).encode()


def wsproto_close_code(data: bytes) -> int | None:
    """The close code a wsproto server answers ``data`` with (None: it takes it)."""
    ws = Connection(ConnectionType.SERVER)
    ws.receive_data(data)
    try:
        for event in ws.events():
            if isinstance(event, CloseConnection):
                return int(event.code)
    except RemoteProtocolError as exc:
        hint = exc.event_hint
        return int(hint.code) if isinstance(hint, CloseConnection) else 1002
    return None


async def test_frames_split_at_every_byte_are_put_together(server: Server) -> None:
    alice = await make_user(server, "alice")
    ws = await hello(server, alice)
    data = client_frame(0x1, PING_JSON) + client_frame(0x9, b"beat") + client_frame(0x1, PING_JSON)
    for i in range(len(data)):
        await ws.send_raw(data[i : i + 1])
        await trio.sleep(0.001)
    assert await ws.sync(b"beat") == [{"type": "pong"}]
    assert await ws.recv() == {"type": "pong"}
    await still_open(ws)


async def test_a_ping_is_answered_with_its_payload_whatever_the_mask(server: Server) -> None:
    alice = await make_user(server, "alice")
    ws = await hello(server, alice)
    for size in (0, 1, 3, 4, 5, 125):
        payload = bytes(range(size))
        assert await ws.sync(payload) == []  # sync: a pong with this payload came back
    zero_mask = struct.pack("!BB", 0x89, 0x80 | 2) + b"\0\0\0\0" + b"hi"
    await ws.send_raw(zero_mask)
    assert await ws.sync(b"after") == []
    await still_open(ws)


async def test_a_medium_message_with_a_16_bit_length_takes_the_fast_path(server: Server) -> None:
    alice = await make_user(server, "alice")
    ws = await hello(server, alice)
    frame = json.dumps({"type": "ping", "pad": "x" * 300}).encode()
    await ws.send_raw(client_frame(0x1, frame) + client_frame(0x2, b"\x81\xa4type\xa4ping"))
    assert [await ws.recv(), await ws.recv()] == [{"type": "pong"}, {"type": "pong"}]


async def test_fragments_go_to_wsproto_and_the_connection_goes_on(server: Server) -> None:
    alice = await make_user(server, "alice")
    ws = await hello(server, alice)
    first, second = PING_JSON[:5], PING_JSON[5:]
    await ws.send_raw(
        client_frame(0x1, PING_JSON)  # fast
        + client_frame(0x1, first, fin=False)  # wsproto from here on
        + client_frame(0x9, b"between")
        + client_frame(0x0, second)
        + client_frame(0x1, PING_JSON)
    )
    assert await ws.sync(b"end") == [{"type": "pong"}] * 3
    await still_open(ws)


BAD = {
    "non-minimal 16-bit length": client_frame(0x1, PING_JSON, long_length=2),
    "non-minimal 64-bit length": client_frame(0x1, PING_JSON, long_length=8),
    "ping of 126 bytes": client_frame(0x9, b"p" * 126),
    "ping with a 16-bit length": client_frame(0x9, b"p", long_length=2),
    "fragmented ping": client_frame(0x9, b"p", fin=False),
    "reserved bit": client_frame(0x1, PING_JSON, rsv=4),
    "reserved opcode": client_frame(0x3, PING_JSON),
    "unmasked text": client_frame(0x1, PING_JSON, masked=False),
    "unmasked ping": client_frame(0x9, b"p", masked=False),
    "invalid UTF-8": client_frame(0x1, b'{"type":"ping","x":"\xff"}'),
    "truncated UTF-8": client_frame(0x1, b"\xe2\x82"),
    "continuation without a start": client_frame(0x0, PING_JSON),
    "close 1000": client_frame(0x8, struct.pack("!H", 1000)),
    "close with a 1-byte payload": client_frame(0x8, b"x"),
}


@pytest.mark.parametrize("name", list(BAD))
async def test_what_wsproto_refuses_closes_with_wsproto_s_code(server: Server, name: str) -> None:
    """Each input comes behind a frame the fast path takes, in the same read."""
    alice = await make_user(server, "alice")
    ws = await hello(server, alice)
    expected = wsproto_close_code(BAD[name])
    assert expected is not None
    await ws.send_raw(client_frame(0x1, PING_JSON) + BAD[name])
    frames = await ws.recv_until_closed()
    assert frames[:1] == [{"type": "pong"}]
    assert ws.close_code == expected, name


async def test_a_message_over_the_fast_limit_is_reassembled_by_wsproto(server: Server) -> None:
    alice = await make_user(server, "alice")
    ws, _ = await RawWs.connect(server.port)
    assert ws is not None
    await ws.send({"type": "hello", "token": alice.token})
    assert (await ws.recv() or {})["type"] == "welcome"
    big = json.dumps({"type": "ping", "pad": "x" * 70_000}).encode()
    await ws.send_raw(client_frame(0x1, big) + client_frame(0x1, PING_JSON))
    assert [await ws.recv(), await ws.recv()] == [{"type": "pong"}, {"type": "pong"}]
