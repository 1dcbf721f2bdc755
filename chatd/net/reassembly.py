"""Putting a WebSocket data message together from the pieces wsproto hands over.

Sizes count bytes (text as UTF-8), not characters. The pieces of an incomplete message go into
one bytearray, so each piece costs O(its size) however many there are, and the message holds no
more memory than its bytes; a message may come in at most :data:`MAX_FRAGMENTS` frames.
Pure: no sockets, no trio.
"""

from __future__ import annotations

from typing import Any

from wsproto.events import Message

MAX_FRAGMENTS = 1024  # frames one message may come in (close 1009 beyond)


class TooBig(Exception):
    """The message passes the byte cap or the fragment cap (the connection closes 1009)."""


def byte_size(data: str | bytes) -> int:
    """The size of a message piece on the wire (text as UTF-8)."""
    if isinstance(data, bytes) or data.isascii():
        return len(data)
    return len(data.encode())


class Partial:
    """A data message still arriving: its bytes so far (text as UTF-8) and its frame count.

    Allocated only while a message is incomplete, so an idle connection pays one empty slot.
    """

    __slots__ = ("data", "frames")

    def __init__(self) -> None:
        self.data = bytearray()
        self.frames = 0


def feed(
    partial: Partial | None,
    event: Message[Any],
    max_frame: int,
    max_fragments: int = MAX_FRAGMENTS,
) -> tuple[Partial | None, str | bytes | None]:
    """Add one piece: (what is still arriving, the whole message once complete).

    Raises :class:`TooBig` past ``max_frame`` bytes or ``max_fragments`` frames.
    """
    data = event.data
    if partial is None and event.message_finished:  # the usual case: handed over as is
        # At most 4 bytes per character: short text needs no encoding to be measured.
        if len(data) > max_frame // 4 and byte_size(data) > max_frame:
            raise TooBig(f"message over {max_frame} bytes")
        return None, data
    if partial is None:
        partial = Partial()
    partial.data += data.encode() if isinstance(data, str) else data
    partial.frames += event.frame_finished
    if len(partial.data) > max_frame:
        raise TooBig(f"message over {max_frame} bytes")
    if not event.message_finished:
        if partial.frames >= max_fragments:
            raise TooBig(f"message in over {max_fragments} frames")
        return partial, None
    # wsproto validated the UTF-8 of a text message already.
    return None, partial.data.decode() if isinstance(data, str) else bytes(partial.data)
