"""The few bytes of WebSocket the load clients need: upgrade request, client frames, a parser
for server frames. Pure functions, no I/O.

Client frames are masked, as RFC 6455 requires, with the all-zero masking key: XOR with zero
is the identity, so payloads go out as they are and the load client spends no Python time
masking. A server cannot tell (and must not care) which key a client picked.
"""

from __future__ import annotations

import base64
import os

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
ZERO_MASK = b"\0\0\0\0"
MAX_HEADER = 16 * 1024


def upgrade_request(host: str, port: int, path: str, subprotocol: str) -> bytes:
    """An HTTP/1.1 WebSocket upgrade request (no Origin: a non-browser client)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
        "\r\n"
    ).encode()


def client_frame(payload: bytes, opcode: int = OP_BINARY) -> bytes:
    """One complete, FIN-set client frame masked with the zero key."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, 0x80 | n)) + ZERO_MASK + payload
    if n < 1 << 16:
        return bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big") + ZERO_MASK + payload
    return bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big") + ZERO_MASK + payload


PING = client_frame(b"", OP_PING)


def close_frame(code: int = 1000) -> bytes:
    return client_frame(code.to_bytes(2, "big"), OP_CLOSE)


def split_response(buf: bytes) -> tuple[int, bytes] | None:
    """(status, bytes after the header block) once the header block is complete, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEADER:
            raise ValueError("upgrade response header too large")
        return None
    try:
        status = int(buf[9:12])
    except ValueError:
        raise ValueError(f"bad status line {buf[:40]!r}") from None
    return status, buf[end + 4 :]


def server_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete (opcode, payload) frames at the start of ``buf`` and the unparsed rest.

    Server frames are unmasked; chatd and the baselines never fragment small frames, so
    continuation frames are returned as they are (opcode 0).
    """
    out: list[tuple[int, bytes]] = []
    pos, n = 0, len(buf)
    while n - pos >= 2:
        length = buf[pos + 1] & 0x7F
        head = 2
        if length == 126:
            if n - pos < 4:
                break
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            head = 4
        elif length == 127:
            if n - pos < 10:
                break
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            head = 10
        end = pos + head + length
        if end > n:
            break
        out.append((buf[pos] & 0x0F, buf[pos + head : end]))
        pos = end
    return out, buf[pos:]


def close_code(payload: bytes) -> int:
    """The close code a close frame carries (1005, "no status", when it carries none)."""
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
