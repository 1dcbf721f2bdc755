"""Harness: raw bytes after the WebSocket upgrade of a real in-process server: wsproto's frame
parser, ``chatd/net/reassembly.py``, the frame decoder, the session machine and the domain
behind them (``chatd/net/websocket.py``).

The harness writes a valid upgrade request itself. The input's first byte says what else it
does first: bit 0, send ``hello`` with alice's valid token (so the input starts authenticated);
bit 1, negotiate ``chatd.v1.msgpack`` rather than JSON. The rest goes to the socket as it is:
client frames must be masked; the seeds use a zero mask key, so their payloads read (and
mutate) as plain text. ``$GROUP`` in it becomes a group alice is in. A crash is a connection
closed 1011 (an unexpected exception: chatd logs it), any other error chatd logs, or a
connection that does not end once the client has half-closed.
"""

from __future__ import annotations

import json

from fuzz.http_request import server, substitute

MAX_LEN = 4096
TIMEOUT = 10

UPGRADE = (
    b"GET /v1/ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
    b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n"
    b"sec-websocket-protocol: %s\r\n\r\n"
)


def masked(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """A client frame with a zero mask key (the payload is sent as is)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def TestOneInput(data: bytes) -> None:  # noqa: N802 (libFuzzer's name)
    srv = server()
    flags, rest = (data[0], data[1:]) if data else (0, b"")
    proto = b"chatd.v1.msgpack" if flags & 2 else b"chatd.v1.json"
    prefix = UPGRADE % proto
    if flags & 1:
        hello = json.dumps({"type": "hello", "token": substitute(b"$TOKEN").decode()})
        prefix += masked(hello.encode())
    out = srv.exchange(prefix + substitute(rest))
    assert out.startswith(b"HTTP/1.1 101 "), out[:200]


def close() -> None:
    from fuzz.http_request import close as close_server

    close_server()
