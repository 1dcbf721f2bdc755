"""Frame builders and the codec's error: what a client builds, the server parses back to the
same frame on either wire; the server frames the session builds survive both wires;
ProtocolError carries its code and ref into the ``error`` frame."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.protocol import frames
from chatd.protocol.errors import ProtocolError, SessionError
from tests.protocol.test_frames import payload_of

PROPS = settings(max_examples=60, deadline=None)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)  # no lone surrogates
NAME = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30)
REF = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=frames.REF_MAX)
SEQ = st.integers(0, frames.MAX_INT)
OPT_SEQ = st.none() | SEQ


def on_the_wire(frame: dict[str, Any], binary: bool) -> frames.ClientFrame:
    """What the server makes of ``frame`` sent as a text (JSON) or binary (msgpack) message."""
    data: str | bytes = msgpack.packb(frame) if binary else json.dumps(frame)
    return frames.parse(frames.decode(data))


@PROPS
@given(token=NAME, since=OPT_SEQ, binary=st.booleans())
def test_hello(token: str, since: int | None, binary: bool) -> None:
    frame = frames.hello_frame(token, since)
    assert on_the_wire(frame, binary) == frames.Hello(token, since)
    assert ("since" in frame) == (since is not None)


@PROPS
@given(ref=REF, body=TEXT, to=NAME, channel=NAME, to_user=st.booleans(), binary=st.booleans())
def test_send(ref: str, body: str, to: str, channel: str, to_user: bool, binary: bool) -> None:
    if to_user:
        frame = frames.send_frame(ref, to=to, body=body)
        expected = frames.Send(ref, to, None, body)
    else:
        frame = frames.send_frame(ref, channel=channel, body=body)
        expected = frames.Send(ref, None, channel, body)
    assert on_the_wire(frame, binary) == expected


def test_send_to_both_or_neither_is_built_as_asked_and_refused_by_the_parser() -> None:
    for frame in (
        frames.send_frame("r", to="bob", channel="g:1", body="x"),
        frames.send_frame("r", body="x"),
    ):
        with pytest.raises(ProtocolError) as info:
            frames.parse(frame)
        assert info.value.ref == "r"


@PROPS
@given(ref=REF, channel=NAME, before=OPT_SEQ, limit=OPT_SEQ, binary=st.booleans())
def test_history(
    ref: str, channel: str, before: int | None, limit: int | None, binary: bool
) -> None:
    frame = frames.history_frame(ref, channel, before=before, limit=limit)
    assert on_the_wire(frame, binary) == frames.History(ref, channel, before, limit)


@PROPS
@given(channel=NAME, msg_id=SEQ, binary=st.booleans())
def test_read_typing_ping(channel: str, msg_id: int, binary: bool) -> None:
    assert on_the_wire(frames.read_frame(channel, msg_id), binary) == frames.Read(channel, msg_id)
    assert on_the_wire(frames.typing_frame(channel), binary) == frames.Typing(channel)
    assert on_the_wire(frames.ping_frame(), binary) == frames.Ping()


def test_every_client_frame_type_has_a_builder() -> None:
    built = {
        frames.hello_frame("t")["type"],
        frames.send_frame("r", to="b", body="x")["type"],
        frames.history_frame("r", "c")["type"],
        frames.read_frame("c", 1)["type"],
        frames.typing_frame("c")["type"],
        frames.ping_frame()["type"],
    }
    assert built == {"hello", "send", "history", "read", "typing", "ping"}
    assert len(built) == len(frames.ClientFrame.__args__)


@PROPS
@given(user=NAME, device=NAME, head=SEQ, binary=st.booleans())
def test_server_frames_of_the_session_round_trip(
    user: str, device: str, head: int, binary: bool
) -> None:
    welcome = frames.welcome_frame(user, device, head)
    assert welcome == {"type": "welcome", "user_id": user, "device_id": device, "inbox_head": head}
    synced = frames.synced_frame(head)
    assert synced == {"type": "synced", "head": head}
    for frame in (welcome, synced):
        assert payload_of(frames.encode(frame, binary), binary) == frame


# -- the codec's error


def test_protocol_error_defaults_to_bad_request_without_ref() -> None:
    exc = ProtocolError("nope")
    assert (exc.message, exc.code, exc.ref, str(exc)) == ("nope", "bad_request", None, "nope")
    assert exc.frame() == {"type": "error", "code": "bad_request", "message": "nope"}


def test_protocol_error_carries_code_and_ref_into_its_frame() -> None:
    exc = ProtocolError("who?", code="unauthorized", ref="r7")
    assert exc.frame() == {"type": "error", "code": "unauthorized", "message": "who?", "ref": "r7"}
    assert ProtocolError("m", "too_large", "r").frame()["code"] == "too_large"


def test_the_two_error_families_are_apart() -> None:
    """A handler of the peer's errors must never swallow a SessionError (a chatd bug)."""
    assert not issubclass(SessionError, ProtocolError)
    assert not issubclass(ProtocolError, SessionError)


@pytest.mark.parametrize("binary", [False, True])
def test_a_parse_error_keeps_the_ref_of_a_frame_from_either_wire(binary: bool) -> None:
    frame = frames.history_frame("h1", "dm:a:b", limit=5)
    frame["limit"] = "five"
    data: str | bytes = msgpack.packb(frame) if binary else json.dumps(frame)
    with pytest.raises(ProtocolError) as info:
        frames.parse(frames.decode(data))
    assert (info.value.code, info.value.ref) == ("bad_request", "h1")
    assert info.value.frame()["ref"] == "h1"
