"""The sans-IO frame codec: decode, parse (validation), build, encode. Sync, no sockets."""

from __future__ import annotations

import json
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from chatd.protocol import frames
from chatd.protocol.errors import ProtocolError

PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def as_text(obj: Any) -> str:
    return json.dumps(obj)


def as_bytes(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def split(message: bytes) -> tuple[int, int, bytes]:
    """(first header byte, payload length, payload) of one unmasked RFC 6455 frame."""
    first, second = message[0], message[1]
    assert second & 0x80 == 0, "server frames must not be masked"
    n, offset = second & 0x7F, 2
    if n == 126:
        (n,) = struct.unpack("!H", message[2:4])
        offset = 4
    elif n == 127:
        (n,) = struct.unpack("!Q", message[2:10])
        offset = 10
    payload = message[offset:]
    assert len(payload) == n
    return first, n, payload


def payload_of(message: bytes, binary: bool) -> dict[str, Any]:
    first, _, payload = split(message)
    assert first == 0x80 | (0x2 if binary else 0x1)
    return frames.decode(payload if binary else payload.decode())


# -- decode


@pytest.mark.parametrize("wire", [as_text, as_bytes])
def test_decode_map(wire: Any) -> None:
    frame = {"type": "send", "ref": "r1", "to": "bob", "body": "hé 👋", "n": [1, None, True]}
    assert frames.decode(wire(frame)) == frame


def test_decode_msgpack_keeps_binary_values() -> None:
    assert frames.decode(as_bytes({"type": "x", "blob": b"\x00\xff"})) == {
        "type": "x",
        "blob": b"\x00\xff",
    }


#: Data that is not a client frame at all (decode refuses it).
NOT_FRAMES: list[str | bytes] = [
    # not a map
    "[]",
    '["type", "ping"]',
    "1",
    '"ping"',
    "null",
    as_bytes([{"type": "ping"}]),
    as_bytes("ping"),
    as_bytes(None),
    # no string type
    "{}",
    '{"ref": "r1"}',
    '{"type": 1}',
    '{"type": null}',
    '{"type": ["ping"]}',
    '{"type": true}',
    as_bytes({}),
    as_bytes({"type": 3}),
    as_bytes({b"type": "ping"}),
    as_bytes({"type": b"ping"}),
    # not JSON
    "",
    "{",
    "{'type': 'ping'}",
    '{"type": "ping"',
    '{"type": "ping"} {}',
    "nope",
    "[" * 100_000,
    '{"type": "ping", "n": ' + "9" * 5000 + "}",
    # not msgpack
    b"",
    b"\xc1",
    b"\x81\xa4typ",
    as_bytes({"type": "ping"}) + b"\x00",
    b"\x81\xa4type\xa2\xff\xfe",  # invalid UTF-8 in a str
    as_bytes({1: "x", "type": "ping"}),  # non-string map key
    b"\x91" * 100_000,  # nested too deep
    b"\xdd\xff\xff\xff\xff",  # an array longer than the data
]


@pytest.mark.parametrize("data", NOT_FRAMES)
def test_decode_refuses(data: str | bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        frames.decode(data)
    # bad_request, with no ref to echo: the transport leaves an authenticated connection open
    # (tests/test_frames.py checks its close table for every one of these)
    assert info.value.code == "bad_request" and info.value.ref is None


# -- parse

VALID: dict[str, dict[str, Any]] = {
    "hello": {"type": "hello", "token": "tok", "since": 7},
    "send_to": {"type": "send", "ref": "r1", "to": "bob", "body": "hi"},
    "send_channel": {"type": "send", "ref": "r1", "channel": "g:1", "body": "hi"},
    "history": {"type": "history", "ref": "r1", "channel": "dm:a_1:b_1", "before": 9, "limit": 5},
    "read": {"type": "read", "channel": "dm:a_1:b_1", "msg_id": 3},
    "typing": {"type": "typing", "channel": "dm:a_1:b_1"},
    "ping": {"type": "ping"},
}
PARSED = {
    "hello": frames.Hello("tok", 7),
    "send_to": frames.Send("r1", "bob", None, "hi"),
    "send_channel": frames.Send("r1", None, "g:1", "hi"),
    "history": frames.History("r1", "dm:a_1:b_1", 9, 5),
    "read": frames.Read("dm:a_1:b_1", 3),
    "typing": frames.Typing("dm:a_1:b_1"),
    "ping": frames.Ping(),
}
# (frame, field, kind, required)
FIELDS = [
    ("hello", "token", str, True),
    ("hello", "since", int, False),
    ("send_to", "ref", str, True),
    ("send_to", "to", str, False),
    ("send_to", "body", str, True),
    ("send_channel", "channel", str, False),
    ("send_channel", "body", str, True),
    ("history", "ref", str, True),
    ("history", "channel", str, True),
    ("history", "before", int, False),
    ("history", "limit", int, False),
    ("read", "channel", str, True),
    ("read", "msg_id", int, True),
    ("typing", "channel", str, True),
]
WRONG = {
    str: [1, 0, True, 1.5, [], {}, ["x"], {"a": "b"}],
    int: ["1", True, False, 1.5, 2.0, [], {}],
}


@pytest.mark.parametrize("name", sorted(VALID))
@pytest.mark.parametrize("wire", [as_text, as_bytes])
def test_parse_valid(name: str, wire: Any) -> None:
    assert frames.parse(frames.decode(wire(VALID[name]))) == PARSED[name]


def test_parse_optional_fields_may_be_absent_or_null() -> None:
    assert frames.parse({"type": "hello", "token": "t"}) == frames.Hello("t", None)
    assert frames.parse({"type": "hello", "token": "t", "since": None}) == frames.Hello("t", None)
    assert frames.parse({"type": "hello", "token": "t", "since": 0}) == frames.Hello("t", 0)
    history = {"type": "history", "ref": "h", "channel": "c", "before": None}
    assert frames.parse(history) == frames.History("h", "c", None, None)
    assert frames.parse({"type": "ping", "ref": "x", "extra": [1]}) == frames.Ping()
    assert frames.parse({"type": "read", "channel": "c", "msg_id": 0}) == frames.Read("c", 0)


def field_cases() -> list[tuple[str, str, Any]]:
    """(frame, field, value) that must be refused; ``...`` means the field is left out."""
    cases: list[tuple[str, str, Any]] = []
    for name, field, kind, required in FIELDS:
        if required:
            cases.append((name, field, ...))
            cases.append((name, field, None))
        cases.extend((name, field, value) for value in WRONG[kind])
        if kind is int:
            cases.extend((name, field, value) for value in (-1, -(2**63)))
    return cases


@pytest.mark.parametrize(("name", "field", "value"), field_cases())
@pytest.mark.parametrize("wire", [as_text, as_bytes])
def test_parse_refuses_missing_or_mistyped_field(
    name: str, field: str, value: Any, wire: Any
) -> None:
    obj = dict(VALID[name])
    obj.setdefault("ref", "the-ref")
    if value is ...:
        del obj[field]
    else:
        obj[field] = value
    with pytest.raises(ProtocolError) as info:
        frames.parse(frames.decode(wire(obj)))
    expected_ref = obj["ref"] if isinstance(obj.get("ref"), str) else None
    assert info.value.ref == expected_ref
    assert info.value.frame()["type"] == "error"
    assert info.value.frame().get("ref") == expected_ref


@pytest.mark.parametrize("name", ["hello", "read", "typing", "ping", "history", "send_to"])
def test_unknown_type_carries_ref(name: str) -> None:
    with pytest.raises(ProtocolError) as info:
        frames.parse({**VALID[name], "type": name.upper(), "ref": "abc"})
    assert info.value.ref == "abc"
    assert info.value.frame() == {
        "type": "error",
        "code": "bad_request",
        "message": info.value.message,
        "ref": "abc",
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"to": "bob", "channel": "g:1"},  # both
        {},  # neither
        {"to": None, "channel": None},  # both null is neither
    ],
)
def test_send_needs_exactly_one_of_to_or_channel(changes: dict[str, Any]) -> None:
    obj = {"type": "send", "ref": "r9", "body": "x", **changes}
    with pytest.raises(ProtocolError) as info:
        frames.parse(obj)
    assert info.value.ref == "r9"


@pytest.mark.parametrize("kind", ["send_to", "history"])
@pytest.mark.parametrize("length", [1, 2, 63, 64])
def test_ref_of_1_to_64_characters_is_accepted(kind: str, length: int) -> None:
    ref = "é" * length
    parsed = frames.parse({**VALID[kind], "ref": ref})
    assert isinstance(parsed, frames.Send | frames.History) and parsed.ref == ref


@pytest.mark.parametrize("kind", ["send_to", "history"])
@pytest.mark.parametrize("ref", ["", "r" * 65, "r" * 1000], ids=["empty", "65", "1000"])
def test_ref_outside_1_to_64_characters_is_refused(kind: str, ref: str) -> None:
    """The contract fixes a ref at 1-64 characters; an out-of-range ref is not echoed back."""
    with pytest.raises(ProtocolError) as info:
        frames.parse({**VALID[kind], "ref": ref})
    assert info.value.ref is None
    assert "ref" not in info.value.frame()


def test_lone_surrogate_is_refused_or_echoable() -> None:
    r"""JSON can spell a lone surrogate (``"\ud800"``) that no UTF-8 reply can carry. Either
    decode/parse refuses it, or whatever it accepted must encode into the reply frames that echo
    it (ack/error carry ``ref``; msg/history carry ``channel`` and ``body``)."""
    for field in ("ref", "channel", "body"):
        obj = {"type": "send", "ref": "r", "channel": "c", "body": "b"}
        text = as_text(obj).replace(f'"{obj[field]}"', '"\\ud800x"', 1)
        try:
            parsed = frames.parse(frames.decode(text))
        except ProtocolError:
            continue
        assert isinstance(parsed, frames.Send)
        reply = {"type": "ack", "ref": parsed.ref, "channel": parsed.channel, "body": parsed.body}
        for binary in (False, True):
            assert payload_of(frames.encode(reply, binary), binary) == reply


# -- encode


def padded(target: int, binary: bool) -> dict[str, Any]:
    """A server frame whose encoded payload is exactly ``target`` bytes."""

    def size(pad: int) -> int:
        frame = {"type": "msg", "body": "p" * pad}
        return len(as_bytes(frame) if binary else json.dumps(frame, separators=(",", ":")))

    base = size(0)
    for pad in range(max(0, target - base - 8), target - base + 1):
        if size(pad) == target:
            return {"type": "msg", "body": "p" * pad}
    raise AssertionError(f"no padding gives {target} bytes")


HEADERS = [
    (0, b"\x00"),
    (125, b"\x7d"),
    (126, b"\x7e\x00\x7e"),
    (65535, b"\x7e\xff\xff"),
    (65536, b"\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
]


@pytest.mark.parametrize(("length", "header"), HEADERS)
@pytest.mark.parametrize("opcode", [0x1, 0x2])
def test_ws_frame_header(length: int, header: bytes, opcode: int) -> None:
    payload = b"a" * length
    message = frames.ws_frame(payload, opcode)
    assert message == bytes([0x80 | opcode]) + header + payload


@pytest.mark.parametrize(("length", "header"), [h for h in HEADERS if h[0] > 0])
@pytest.mark.parametrize("binary", [False, True])
def test_encode_is_an_unmasked_rfc6455_message(length: int, header: bytes, binary: bool) -> None:
    frame = padded(length, binary)
    message = frames.encode(frame, binary)
    opcode = 0x2 if binary else 0x1
    assert message[: 1 + len(header)] == bytes([0x80 | opcode]) + header
    assert split(message)[1] == length
    assert payload_of(message, binary) == frame

    # An independent RFC 6455 parser, on the client side, reads it back as one final frame.
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(message)
    (got,) = list(client.received_frames())
    assert got.opcode == (Opcode.BINARY if binary else Opcode.TEXT)
    assert got.frame_finished and got.message_finished
    data = got.payload if binary else got.payload.encode()
    assert frames.decode(data if binary else data.decode()) == frame


def test_encode_text_is_compact_utf8_json() -> None:
    frame = {"type": "msg", "body": "héllo 👋", "n": 1}
    _, _, payload = split(frames.encode(frame, False))
    assert payload == '{"type":"msg","body":"héllo 👋","n":1}'.encode()


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
JSON_FRAMES = st.builds(
    lambda rest, kind: {**rest, "type": kind},
    st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=8),
    st.text(max_size=10),
)


@PROPS
@given(frame=JSON_FRAMES, binary=st.booleans())
def test_encode_then_decode_round_trips(frame: dict[str, Any], binary: bool) -> None:
    assert payload_of(frames.encode(frame, binary), binary) == frame
