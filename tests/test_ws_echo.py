"""The test-only echo endpoint (chatd/net/echo.py) over real sockets, and the RFC 6455 rules of
the connection layer it shares with /v1/ws, pinned as Autobahn|Testsuite checks them
(docs/conformance.md): close codes, UTF-8 across fragments, close payloads, control frames."""

from __future__ import annotations

import base64
import os
import struct
from pathlib import Path
from typing import Any

import pytest
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Message, Pong

from chatd.net.echo import ECHO_PATH
from chatd.server import Server
from tests.conftest import make_config, running
from tests.wsraw import client_frame

TEXT, BINARY, CLOSE, PING = 0x1, 0x2, 0x8, 0x9


def echo_config(data: Path, **testing: Any) -> Any:
    return make_config(
        data,
        testing={"websocket_echo": True, **testing},
        server={"hello_timeout": 0.2},
        limits={"max_frame_bytes": 4096},
    )


class Echo:
    """A raw client of the echo endpoint: frames exactly as given, events as wsproto parses
    the server's frames."""

    def __init__(self, stream: trio.SocketStream, rest: bytes) -> None:
        self.stream = stream
        self.ws = Connection(ConnectionType.CLIENT)
        if rest:
            self.ws.receive_data(rest)
        self.parts: list[Any] = []

    @classmethod
    async def open(cls, port: int) -> tuple[Echo | None, bytes]:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {ECHO_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await stream.send_all(request.encode())
        head = b""
        while b"\r\n\r\n" not in head and (chunk := await stream.receive_some(65536)):
            head += chunk
        response, _, rest = head.partition(b"\r\n\r\n")
        if not response.startswith(b"HTTP/1.1 101"):
            await stream.aclose()
            return None, response
        return cls(stream, rest), response

    async def send(self, *frames: bytes) -> None:
        await self.stream.send_all(b"".join(frames))

    async def next(self) -> Any:
        """The next whole message (str or bytes), Pong, or CloseConnection; None at EOF."""
        while True:
            for event in self.ws.events():
                if isinstance(event, Message):
                    self.parts.append(event.data)
                    if event.message_finished:
                        data = self.parts[0][:0].join(self.parts)
                        self.parts.clear()
                        return data
                elif isinstance(event, (Pong, CloseConnection)):
                    return event
            data = await self.stream.receive_some(1 << 20)
            if not data:
                return None
            self.ws.receive_data(data)

    async def closed_with(self) -> int | None:
        """Read until the server's close frame; its code (None if the socket just ended)."""
        while (event := await self.next()) is not None:
            if isinstance(event, CloseConnection):
                return event.code
        return None

    async def aclose(self) -> None:
        await self.stream.aclose()


@pytest.fixture
async def echo_server(data_dir: Path) -> Any:
    async with running(echo_config(data_dir)) as srv:
        yield srv


async def test_echo_is_off_by_default(server: Server) -> None:
    echo, response = await Echo.open(server.port)
    assert echo is None
    assert response.startswith(b"HTTP/1.1 404")


async def test_text_and_binary_come_back_as_sent(echo_server: Server) -> None:
    echo, _ = await Echo.open(echo_server.port)
    assert echo is not None
    await echo.send(client_frame(TEXT, "héllo ✓".encode()), client_frame(BINARY, b"\x00\xff"))
    assert await echo.next() == "héllo ✓"
    assert await echo.next() == b"\x00\xff"
    big = os.urandom(3000)  # a 16-bit length, both ways
    await echo.send(client_frame(BINARY, big), client_frame(PING, b"p"))
    assert await echo.next() == big
    pong = await echo.next()
    assert isinstance(pong, Pong) and pong.payload == b"p"
    await echo.aclose()


async def test_a_fragmented_message_comes_back_whole(echo_server: Server) -> None:
    echo, _ = await Echo.open(echo_server.port)
    assert echo is not None
    text = "κόσμε".encode()  # a character split between fragments
    await echo.send(
        client_frame(TEXT, text[:3], fin=False),
        client_frame(PING, b"in between"),  # control frames may come between fragments
        client_frame(0x0, text[3:7], fin=False),
        client_frame(0x0, text[7:]),
    )
    pong = await echo.next()
    assert isinstance(pong, Pong) and pong.payload == b"in between"
    assert await echo.next() == "κόσμε"
    await echo.aclose()


async def test_no_hello_deadline_on_the_echo(echo_server: Server) -> None:
    echo, _ = await Echo.open(echo_server.port)
    assert echo is not None
    await trio.sleep(0.5)  # past hello_timeout (0.2 s), which /v1/ws would close 1008 at
    await echo.send(client_frame(TEXT, b"still here"))
    assert await echo.next() == "still here"
    await echo.aclose()


async def test_a_clean_close_is_answered_with_its_code(echo_server: Server) -> None:
    echo, _ = await Echo.open(echo_server.port)
    assert echo is not None
    await echo.send(client_frame(CLOSE, struct.pack("!H", 1000) + b"bye"))
    event = await echo.next()
    assert isinstance(event, CloseConnection) and (event.code, event.reason) == (1000, "bye")
    assert await echo.next() is None  # and the server closes the TCP connection
    await echo.aclose()


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        # invalid UTF-8 in the second fragment of a text message (Autobahn 6.x)
        ([client_frame(TEXT, b"ok", fin=False), client_frame(0x0, b"\xce\xba\xe1")], 1007),
        ([client_frame(TEXT, b"\xed\xa0\x80")], 1007),  # a UTF-16 surrogate (6.3)
        ([client_frame(PING, b"x" * 126)], 1002),  # a control frame over 125 bytes (2.5)
        ([client_frame(PING, b"", fin=False)], 1002),  # a fragmented control frame (5.1)
        ([client_frame(0x0, b"x")], 1002),  # a continuation with nothing to continue (5.9)
        ([client_frame(TEXT, b"a", fin=False), client_frame(TEXT, b"b")], 1002),  # (5.18)
        ([client_frame(TEXT, b"x", rsv=1)], 1002),  # a reserved bit, no extension (3.1)
        ([client_frame(0x3, b"")], 1002),  # a reserved data opcode (4.1.1)
        ([client_frame(0xB, b"")], 1002),  # a reserved control opcode (4.2.1)
        ([client_frame(TEXT, b"x", masked=False)], 1002),  # clients must mask
        ([client_frame(CLOSE, b"\x03")], 1002),  # a 1-byte close payload (7.3.2)
        ([client_frame(CLOSE, struct.pack("!H", 999))], 1002),  # close codes (7.9.x)
        ([client_frame(CLOSE, struct.pack("!H", 1005))], 1002),
        ([client_frame(CLOSE, struct.pack("!H", 1016))], 1002),
        ([client_frame(CLOSE, struct.pack("!H", 5000))], 1002),
        ([client_frame(CLOSE, struct.pack("!H", 1000) + b"\xff")], 1007),  # close reason (7.5.1)
    ],
)
async def test_protocol_errors_close_with_the_rfc_code(
    echo_server: Server, frames: list[bytes], code: int
) -> None:
    echo, _ = await Echo.open(echo_server.port)
    assert echo is not None
    await echo.send(*frames)
    assert await echo.closed_with() == code
    await echo.aclose()


async def test_the_byte_cap_applies_to_the_echo(echo_server: Server) -> None:
    """limits.max_frame_bytes (4 KiB here) counts the whole message across fragments."""
    echo, _ = await Echo.open(echo_server.port)
    assert echo is not None
    await echo.send(client_frame(BINARY, b"x" * 4096))
    assert await echo.next() == b"x" * 4096
    await echo.send(client_frame(BINARY, b"x" * 3000, fin=False), client_frame(0x0, b"x" * 1097))
    assert await echo.closed_with() == 1009
    await echo.aclose()


async def test_the_echo_has_its_own_fragment_cap(data_dir: Path) -> None:
    async with running(echo_config(data_dir, echo_max_fragments=8)) as srv:
        echo, _ = await Echo.open(srv.port)
        assert echo is not None
        pieces = [client_frame(TEXT, b"a", fin=False)]
        pieces += [client_frame(0x0, b"a", fin=False) for _ in range(6)]
        await echo.send(*pieces, client_frame(0x0, b"a"))  # 8 frames: at the cap
        assert await echo.next() == "a" * 8
        pieces += [client_frame(0x0, b"a", fin=False)]  # 8 unfinished: over it
        await echo.send(*pieces)
        assert await echo.closed_with() == 1009
        await echo.aclose()


async def test_frames_split_anywhere_across_reads(echo_server: Server) -> None:
    """A frame may arrive a byte at a time, or many frames in one read: the same echoes."""
    echo, _ = await Echo.open(echo_server.port)
    assert echo is not None
    frames = client_frame(TEXT, "ünïcode".encode()) + client_frame(BINARY, b"b" * 300)
    frames += client_frame(PING, b"p")
    for i in range(len(frames)):
        await echo.send(frames[i : i + 1])
        await trio.sleep(0.001)  # let the server read what came so far
    assert await echo.next() == "ünïcode"
    assert await echo.next() == b"b" * 300
    pong = await echo.next()
    assert isinstance(pong, Pong) and pong.payload == b"p"
    await echo.send(frames * 20)
    for _ in range(20):
        assert [await echo.next(), await echo.next()] == ["ünïcode", b"b" * 300]
        assert isinstance(await echo.next(), Pong)
    await echo.aclose()


async def test_a_non_minimal_length_closes_1002(echo_server: Server) -> None:
    """RFC 6455 5.2: "the minimal number of bytes MUST be used to encode the length"."""
    echo, _ = await Echo.open(echo_server.port)
    assert echo is not None
    await echo.send(client_frame(TEXT, b"short", long_length=2))
    assert await echo.closed_with() == 1002
    await echo.aclose()
