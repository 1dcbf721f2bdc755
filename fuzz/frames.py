"""Harness: the client frame decoder (``chatd/protocol/frames.py``).

The first byte picks the wire kind, as a WebSocket message would: even, a text frame (JSON; the
rest must be UTF-8, which wsproto has checked before chatd sees it); odd, a binary frame
(msgpack). ``decode`` then ``parse`` must give a typed frame or raise ``ProtocolError``;
anything else is a crash. Beyond that:

- a parsed frame holds what the contract says (types, ranges, ``ref`` length, encodable
  strings), and building it again with the module's own builders parses to the same frame;
- the ``error`` frame answering a ``ProtocolError`` encodes in both subprotocols (the
  connection writes it), and its ``ref`` is one the peer sent.
"""

from __future__ import annotations

from typing import Any

from chatd.protocol import frames
from chatd.protocol.errors import ProtocolError

MAX_LEN = 4096


def TestOneInput(data: bytes) -> None:  # noqa: N802 (libFuzzer's name)
    if not data:
        return
    payload: str | bytes = data[1:]
    if data[0] % 2 == 0:
        try:
            payload = data[1:].decode("utf-8")
        except UnicodeDecodeError:
            return  # wsproto closes the connection (1007) before a frame is decoded
    try:
        obj = frames.decode(payload)
        frame = frames.parse(obj)
    except ProtocolError as exc:
        check_error(exc, payload)
        return
    check_frame(frame)
    again = frames.parse(rebuild(frame))
    assert again == frame, (frame, again)


def check_error(exc: ProtocolError, payload: str | bytes) -> None:
    answer = exc.frame()
    assert answer["type"] == "error" and isinstance(answer["message"], str), answer
    assert exc.code == "bad_request", exc.code
    if exc.ref is not None:
        assert 1 <= len(exc.ref) <= frames.REF_MAX, exc.ref
    for binary in (False, True):
        frames.encode(answer, binary)


def check_frame(frame: frames.ClientFrame) -> None:
    fields: dict[str, Any] = {
        name: getattr(frame, name) for name in getattr(frame, "__slots__", ())
    }
    for name, value in fields.items():
        if isinstance(value, str):
            value.encode()  # valid Unicode: a lone surrogate must have been refused
        elif value is not None:
            assert type(value) is int and 0 <= value <= frames.MAX_INT, (name, value)
    if isinstance(frame, frames.Send | frames.History):
        assert 1 <= len(frame.ref) <= frames.REF_MAX, frame
    if isinstance(frame, frames.Send):
        assert (frame.to is None) != (frame.channel is None), frame


def rebuild(frame: frames.ClientFrame) -> dict[str, Any]:
    """The frame written with the module's builders (what the Python client sends)."""
    if isinstance(frame, frames.Hello):
        return frames.hello_frame(frame.token, frame.since)
    if isinstance(frame, frames.Send):
        return frames.send_frame(frame.ref, body=frame.body, to=frame.to, channel=frame.channel)
    if isinstance(frame, frames.History):
        return frames.history_frame(
            frame.ref, frame.channel, before=frame.before, limit=frame.limit
        )
    if isinstance(frame, frames.Read):
        return frames.read_frame(frame.channel, frame.msg_id)
    if isinstance(frame, frames.Typing):
        return frames.typing_frame(frame.channel)
    return frames.ping_frame()
