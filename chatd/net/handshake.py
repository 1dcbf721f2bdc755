"""The WebSocket opening handshake: checks on the upgrade request and the 101 answer.

Runs on the parsed h11 request's headers (``chatd/net/http.py``); what follows the 101 is
``chatd/net/websocket.py``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from chatd.domain.errors import BadRequest, Forbidden
from chatd.protocol import frames

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass(frozen=True)
class Origins:
    """Which browser origins may open a WebSocket: the server's own, and a configured list."""

    public_origin: str
    allowed: tuple[str, ...] = ()


def handshake(
    origins: Origins, request_headers: dict[str, str]
) -> tuple[list[tuple[bytes, bytes]], bool]:
    """Check an upgrade request; return the 101 response headers and whether frames are binary.

    Raises Forbidden (403) for a disallowed Origin and BadRequest for a malformed handshake.
    """
    origin = request_headers.get("origin")
    if origin is not None and not origin_allowed(origins, origin, request_headers.get("host", "")):
        raise Forbidden(f"origin {origin!r} is not allowed")
    if request_headers.get("sec-websocket-version", "").strip() != "13":
        raise BadRequest("unsupported WebSocket version (need 13)")
    key = request_headers.get("sec-websocket-key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise BadRequest("bad Sec-WebSocket-Key") from None
    accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest())
    headers = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", accept),
    ]
    offered = [p.strip() for p in request_headers.get("sec-websocket-protocol", "").split(",")]
    binary = False
    for proto in offered:
        if proto in (frames.SUBPROTOCOL_JSON, frames.SUBPROTOCOL_MSGPACK):
            binary = proto == frames.SUBPROTOCOL_MSGPACK
            headers.append((b"sec-websocket-protocol", proto.encode()))
            break
    return headers, binary


def origin_allowed(origins: Origins, origin: str, host: str) -> bool:
    """Same origin as the request's Host or the public URL, or listed in server.allowed_origins."""
    if origin in origins.allowed:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:  # e.g. "http://[": not an origin anyone serves
        return False
    if parts.scheme not in ("http", "https"):
        return False
    return parts.netloc == host or origin == origins.public_origin
