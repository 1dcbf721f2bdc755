"""The WebSocket opening handshake: checks on the upgrade request and the 101 answer.

Runs on the parsed h11 request (``chatd/http.py``); what follows the 101 is ``chatd/ws.py``.
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from chatd.domain.errors import BadRequest, Forbidden
from chatd.protocol import frames

if TYPE_CHECKING:
    from chatd.app import App
    from chatd.net.http import Request

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def handshake(app: App, request: Request) -> tuple[list[tuple[bytes, bytes]], bool]:
    """Check an upgrade request; return the 101 response headers and whether frames are binary.

    Raises Forbidden (403) for a disallowed Origin and BadRequest for a malformed handshake.
    """
    origin = request.headers.get("origin")
    if origin is not None and not origin_allowed(app, origin, request.headers.get("host", "")):
        raise Forbidden(f"origin {origin!r} is not allowed")
    if request.headers.get("sec-websocket-version", "").strip() != "13":
        raise BadRequest("unsupported WebSocket version (need 13)")
    key = request.headers.get("sec-websocket-key", "").strip()
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
    offered = [p.strip() for p in request.headers.get("sec-websocket-protocol", "").split(",")]
    binary = False
    for proto in offered:
        if proto in (frames.SUBPROTOCOL_JSON, frames.SUBPROTOCOL_MSGPACK):
            binary = proto == frames.SUBPROTOCOL_MSGPACK
            headers.append((b"sec-websocket-protocol", proto.encode()))
            break
    return headers, binary


def origin_allowed(app: App, origin: str, host: str) -> bool:
    """Same origin as the request's Host or the public URL, or listed in server.allowed_origins."""
    if origin in app.config.server.allowed_origins:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:  # e.g. "http://[": not an origin anyone serves
        return False
    if parts.scheme not in ("http", "https"):
        return False
    return parts.netloc == host or origin == app.public_origin
