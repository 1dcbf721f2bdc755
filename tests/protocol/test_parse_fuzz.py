"""The parser against arbitrary input: it accepts a client frame or raises ProtocolError
(``bad_request``, with a ref only when it is one that can be echoed), nothing else."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from chatd.protocol import frames
from chatd.protocol.errors import ProtocolError
from tests.protocol.test_frames import PROPS, as_bytes, as_text

CLIENT_FRAMES = (frames.Hello, frames.Send, frames.History, frames.Read, frames.Typing, frames.Ping)


def parse_only_bad_request(data: str | bytes) -> None:
    try:
        parsed = frames.parse(frames.decode(data))
    except ProtocolError as exc:
        assert exc.code == "bad_request"
        assert exc.ref is None or 1 <= len(exc.ref) <= frames.REF_MAX
        return
    assert isinstance(parsed, CLIENT_FRAMES)


@PROPS
@given(st.text() | st.binary())
def test_parse_of_arbitrary_data_raises_only_bad_request(data: str | bytes) -> None:
    parse_only_bad_request(data)


FIELD_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**64 - 1)
    | st.floats()
    | st.text(max_size=70)
    | st.binary(max_size=5)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
FUZZ_FRAMES = st.builds(
    lambda fields, kind: {**fields, "type": kind},
    st.dictionaries(
        st.sampled_from(
            ["ref", "to", "channel", "body", "token", "since", "before", "limit", "msg_id", "x"]
        ),
        FIELD_VALUES,
    ),
    st.sampled_from(["hello", "send", "history", "read", "typing", "ping", "pong", ""]),
)


@PROPS
@given(frame=FUZZ_FRAMES, binary=st.booleans())
def test_parse_of_frame_shaped_maps_raises_only_bad_request(
    frame: dict[str, Any], binary: bool
) -> None:
    """Maps with the right keys and arbitrary values: parse accepts or raises ProtocolError."""
    try:
        data: str | bytes = as_bytes(frame) if binary else as_text(frame)
    except (ValueError, TypeError, OverflowError):
        return  # not expressible on this wire (bytes in JSON, ints past 64 bits in msgpack)
    parse_only_bad_request(data)
