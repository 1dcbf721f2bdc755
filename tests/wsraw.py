"""A raw WebSocket test client: hand-made handshake and frames, for inputs a real client
library would refuse to produce (invalid UTF-8, oversize frames, no hello, not reading)."""

from __future__ import annotations

import base64
import json
import os
import struct
from typing import Any

import msgpack
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Message, Ping, Pong


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    long_length: int = 0,
) -> bytes:
    """A client frame exactly as asked: masked unless told otherwise, RSV bits ``rsv`` (0-7),
    and ``long_length`` 2 or 8 to force that length encoding even where it is not minimal."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv & 7) << 4 | opcode
    mask_bit = 0x80 if masked else 0
    if long_length == 8 or (not long_length and n >= 1 << 16):
        header = struct.pack("!BBQ", b0, mask_bit | 127, n)
    elif long_length == 2 or (not long_length and n >= 126):
        header = struct.pack("!BBH", b0, mask_bit | 126, n)
    else:
        header = struct.pack("!BB", b0, mask_bit | n)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")  # XOR as one big int: fast
    return header + mask + (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


OPEN: list[trio.SocketStream] = []  # every stream opened, for tests to close at teardown


async def close_all() -> None:
    while OPEN:
        await OPEN.pop().aclose()


class RawWs:
    def __init__(self, stream: trio.SocketStream, binary: bool) -> None:
        self.stream = stream
        self.binary = binary
        self.ws = Connection(ConnectionType.CLIENT)
        self.close_code: int | None = None
        self._buf: list[Any] = []

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        protocol: str | None = None,
        origin: str | None = None,
        extra: bytes = b"",
        track: bool = True,
    ) -> tuple[RawWs | None, bytes]:
        """Handshake; returns (RawWs, response head) or (None, response) if refused.

        ``track=False``: the caller closes the stream itself (it is not in ``OPEN``).
        """
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        if track:
            OPEN.append(stream)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET /v1/ws HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if protocol:
            lines.append(f"Sec-WebSocket-Protocol: {protocol}")
        if origin:
            lines.append(f"Origin: {origin}")
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + extra)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            head += chunk
        response, _, rest = head.partition(b"\r\n\r\n")
        if not response.startswith(b"HTTP/1.1 101"):
            # read whatever body follows
            with trio.move_on_after(1):
                while chunk := await stream.receive_some(65536):
                    rest += chunk
            await stream.aclose()
            return None, response + b"\r\n\r\n" + rest
        raw = cls(stream, protocol == "chatd.v1.msgpack")
        raw.ws.receive_data(rest) if rest else None
        return raw, response

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send(self, frame: Any) -> None:
        if self.binary:
            await self.send_raw(client_frame(0x2, msgpack.packb(frame)))
        else:
            await self.send_raw(client_frame(0x1, json.dumps(frame).encode()))

    async def recv(self) -> dict[str, Any] | None:
        """The next data frame, decoded; None once the server closed (see close_code)."""
        while True:
            frame = await self._next(None)
            if not isinstance(frame, bytes):
                return frame

    async def sync(self, payload: bytes = b"sync") -> list[dict[str, Any]]:
        """Send a WebSocket ping; return the data frames that came before its pong (or the
        close): the server had handled everything sent before the ping by then."""
        try:
            await self.send_raw(client_frame(0x9, payload))
        except trio.BrokenResourceError:
            pass  # the server closed first: its close frame is still there to be read
        frames = []
        while (frame := await self._next(payload)) is not None and frame != payload:
            assert isinstance(frame, dict)
            frames.append(frame)
        return frames

    async def _next(self, pong: bytes | None) -> dict[str, Any] | bytes | None:
        """The next data frame, or the payload of a pong equal to ``pong``, or None (closed)."""
        while True:
            for event in self.ws.events():
                if isinstance(event, Message):
                    self._buf.append(event.data)
                    if event.message_finished:
                        data = self._buf[0][:0].join(self._buf)
                        self._buf.clear()
                        if isinstance(data, bytes):
                            return msgpack.unpackb(data)  # type: ignore[no-any-return]
                        return json.loads(data)  # type: ignore[no-any-return]
                elif isinstance(event, CloseConnection):
                    self.close_code = event.code
                elif isinstance(event, Pong) and pong is not None and event.payload == pong:
                    return pong
                elif isinstance(event, (Ping, Pong)):
                    continue
            if self.close_code is not None:
                return None
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                if self.close_code is None:
                    self.close_code = 1006
                return None
            self.ws.receive_data(data)

    async def recv_until_closed(self) -> list[dict[str, Any]]:
        frames = []
        while (frame := await self.recv()) is not None:
            frames.append(frame)
        return frames

    async def aclose(self) -> None:
        await self.stream.aclose()
