"""Client and server frames: decoding, validation, encoding. Pure functions, no I/O.

Client frames arrive as JSON text frames or msgpack binary frames (whichever the client sends;
the subprotocol only chooses what the server sends). Each is checked into a frozen dataclass;
anything malformed raises :class:`~chatd.protocol.errors.ProtocolError` (code ``bad_request``),
carrying the frame's ``ref`` when it had one, so the connection can answer with an ``error``
frame and stay open.

Client frames are also *built* here (:func:`hello_frame`, :func:`send_frame`, ...), so the
Python client and the tests write each shape once, in the same module that parses it.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

# Re-exported: the codec's error, as callers of decode/parse catch it (``frames.ProtocolError``).
from chatd.protocol.errors import ProtocolError as ProtocolError

SUBPROTOCOL_JSON = "chatd.v1.json"
SUBPROTOCOL_MSGPACK = "chatd.v1.msgpack"
REF_MAX = 64
MAX_INT = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Hello:
    token: str
    since: int | None


@dataclass(frozen=True, slots=True)
class Send:
    ref: str
    to: str | None
    channel: str | None
    body: str


@dataclass(frozen=True, slots=True)
class History:
    ref: str
    channel: str
    before: int | None
    limit: int | None


@dataclass(frozen=True, slots=True)
class Read:
    channel: str
    msg_id: int


@dataclass(frozen=True, slots=True)
class Typing:
    channel: str


@dataclass(frozen=True, slots=True)
class Ping:
    pass


ClientFrame = Hello | Send | History | Read | Typing | Ping


def decode(data: str | bytes) -> dict[str, Any]:
    """A text frame is JSON, a binary frame msgpack; either must hold a map with a ``type``."""
    try:
        if isinstance(data, str):
            obj = json.loads(data)
        else:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException):
        kind = "JSON" if isinstance(data, str) else "msgpack"
        raise ProtocolError(f"frame is not valid {kind}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("frame must be a map")
    if not isinstance(obj.get("type"), str):
        raise ProtocolError("frame needs a string 'type'")
    return obj


def _ref(obj: dict[str, Any]) -> str | None:
    """The frame's ref, if it is one we can echo back in an error frame."""
    ref = obj.get("ref")
    if not isinstance(ref, str) or not 1 <= len(ref) <= REF_MAX:
        return None
    if ref.isascii():
        return ref
    try:
        ref.encode()
    except UnicodeEncodeError:
        return None
    return ref


def _get(obj: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    value: Any = obj.get(name)
    if value is None:
        if required:
            raise ProtocolError(f"missing field {name!r}")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"field {name!r} must be {'a string' if kind is str else 'an integer'}")
    if isinstance(value, int) and not 0 <= value <= MAX_INT:
        raise ProtocolError(f"field {name!r} must be between 0 and {MAX_INT}")
    if isinstance(value, str) and not value.isascii():  # isascii: O(1), no copy
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate from a JSON \ud800 escape
            raise ProtocolError(f"field {name!r} is not valid Unicode") from None
    return value


def _ref_field(obj: dict[str, Any]) -> str:
    ref: str = _get(obj, "ref", str)
    if not 1 <= len(ref) <= REF_MAX:
        raise ProtocolError(f"ref must be 1 to {REF_MAX} characters")
    return ref


def parse(obj: dict[str, Any]) -> ClientFrame:
    """Validate a decoded frame into its dataclass. ProtocolError (with ``ref``) when malformed."""
    try:
        return _parse(obj)
    except ProtocolError as exc:
        exc.ref = _ref(obj)
        raise


def _parse(obj: dict[str, Any]) -> ClientFrame:
    kind = obj["type"]
    if kind == "send":
        ref = _ref_field(obj)
        to = _get(obj, "to", str, required=False)
        channel = _get(obj, "channel", str, required=False)
        if (to is None) == (channel is None):
            raise ProtocolError("send needs exactly one of 'to' or 'channel'")
        return Send(ref, to, channel, _get(obj, "body", str))
    if kind == "ping":
        return Ping()
    if kind == "history":
        ref = _ref_field(obj)
        return History(
            ref,
            _get(obj, "channel", str),
            _get(obj, "before", int, required=False),
            _get(obj, "limit", int, required=False),
        )
    if kind == "read":
        return Read(_get(obj, "channel", str), _get(obj, "msg_id", int))
    if kind == "typing":
        return Typing(_get(obj, "channel", str))
    if kind == "hello":
        return Hello(_get(obj, "token", str), _get(obj, "since", int, required=False))
    raise ProtocolError(f"unknown frame type {kind!r}")


# -- building frames: each shape written once (the parser above is its other half)


def hello_frame(token: str, since: int | None = None) -> dict[str, Any]:
    """``hello``; ``since`` (the device's cursor) asks for a replay of what follows it."""
    frame: dict[str, Any] = {"type": "hello", "token": token}
    if since is not None:
        frame["since"] = since
    return frame


def send_frame(
    ref: str, *, body: str, to: str | None = None, channel: str | None = None
) -> dict[str, Any]:
    """``send`` to a user (``to``) or a channel (``channel``); the server wants exactly one."""
    frame: dict[str, Any] = {"type": "send", "ref": ref, "body": body}
    if to is not None:
        frame["to"] = to
    if channel is not None:
        frame["channel"] = channel
    return frame


def history_frame(
    ref: str, channel: str, *, before: int | None = None, limit: int | None = None
) -> dict[str, Any]:
    """``history``: the page of ``channel`` before ``before`` (the newest without it)."""
    frame: dict[str, Any] = {"type": "history", "ref": ref, "channel": channel}
    if before is not None:
        frame["before"] = before
    if limit is not None:
        frame["limit"] = limit
    return frame


def read_frame(channel: str, msg_id: int) -> dict[str, Any]:
    """``read``: the read mark of ``channel`` moves to ``msg_id``."""
    return {"type": "read", "channel": channel, "msg_id": msg_id}


def typing_frame(channel: str) -> dict[str, Any]:
    return {"type": "typing", "channel": channel}


def ping_frame() -> dict[str, Any]:
    return {"type": "ping"}


def welcome_frame(user_id: str, device_id: str, inbox_head: int) -> dict[str, Any]:
    """The server's answer to an accepted ``hello``."""
    return {"type": "welcome", "user_id": user_id, "device_id": device_id, "inbox_head": inbox_head}


def synced_frame(head: int) -> dict[str, Any]:
    """The end of a replay: every inbox entry up to ``head`` has been sent."""
    return {"type": "synced", "head": head}


class _Packers(threading.local):
    """One ``msgpack.Packer`` per thread: ``msgpack.packb`` builds one per call, which was
    most of the cost of encoding a small frame (a Packer is not safe to share)."""

    def __init__(self) -> None:
        self.pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack


_packers = _Packers()
_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode(frame: dict[str, Any], binary: bool) -> bytes:
    """A server frame as a complete WebSocket message (header + payload), ready to write.

    Server frames are never masked and never fragmented, so one encoding serves every
    connection that negotiated the same subprotocol.
    """
    if binary:
        payload = _packers.pack(frame)
        opcode = 0x82
    else:
        payload = _json(frame).encode()
        opcode = 0x81
    n = len(payload)
    if n < 126:  # most frames: ws_frame inlined
        return bytes((opcode, n)) + payload
    return ws_frame(payload, opcode & 0x0F)


#: ``{"type": "msg", "inbox": `` as msgpack: a fixmap of 7 pairs, then two keys and a value.
_MSG_HEAD_BIN = b"\x87\xa4type\xa3msg\xa5inbox"
_MSG_HEAD_JSON = b'{"type":"msg","inbox":'


def msg_parts(view: dict[str, Any], binary: bool) -> tuple[bytes, bytes]:
    """The payload of a ``msg`` frame around its ``inbox`` seq, for :func:`encode_msg`.

    ``view`` is the message's five fields (channel, msg_id, from, body, ts), the same for
    every member; ``encode_msg(msg_parts(view, b), seq, b)`` equals
    ``encode({"type": "msg", "inbox": seq, **view}, b)`` byte for byte, for the cost of two
    concatenations per member instead of an encoding.
    """
    if len(view) != 5:
        raise ValueError("a msg frame's view has five fields")
    if binary:
        return _MSG_HEAD_BIN, _packers.pack(view)[1:]  # past its own fixmap byte (0x85)
    return _MSG_HEAD_JSON, b"," + _json(view).encode()[1:]  # past its "{"


def encode_msg(parts: tuple[bytes, bytes], seq: int, binary: bool) -> bytes:
    """A ``msg`` frame for inbox ``seq`` from :func:`msg_parts`, as :func:`encode` makes it."""
    head, tail = parts
    if binary:
        payload = head + _packers.pack(seq) + tail
        opcode = 0x82
    else:
        payload = head + str(seq).encode() + tail
        opcode = 0x81
    n = len(payload)
    if n < 126:
        return bytes((opcode, n)) + payload
    return ws_frame(payload, opcode & 0x0F)


def ws_frame(payload: bytes, opcode: int) -> bytes:
    """RFC 6455 frame, FIN set, unmasked (server to client)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload
