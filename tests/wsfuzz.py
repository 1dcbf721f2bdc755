"""Hypothesis strategies for WebSocket client traffic (tests/test_fuzz_ws.py).

Each drawn :class:`Item` is bytes ready for the wire: a client frame of any type with fields
dropped or given values of the wrong kind (JSON or msgpack), odd encodings no library
produces, raw frames (any opcode, RSV bits, unmasked, non-minimal lengths, sizes around the
length encodings), control and close frames, invalid UTF-8 and oversize messages. Each says how
many error frames it must get at least, and which close codes it asks for itself.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import strategies as st

from chatd.protocol import frames as protocol
from tests.wsraw import client_frame as frame

MIB = 1 << 20


@dataclass
class Item:
    data: bytes
    #: data messages in it that must each get an error frame while the connection stays open
    errors: int = 0
    #: close codes this item itself asks for (a client close frame is echoed)
    closes: frozenset[int] = frozenset()
    #: only whole, valid WebSocket messages: the error count above can be relied on
    clean: bool = True


FIELDS: dict[str, dict[str, tuple[type, bool]]] = {
    "hello": {"token": (str, True), "since": (int, False)},
    "send": {"ref": (str, True), "to": (str, False), "channel": (str, False), "body": (str, True)},
    "history": {
        "ref": (str, True),
        "channel": (str, True),
        "before": (int, False),
        "limit": (int, False),
    },
    "read": {"channel": (str, True), "msg_id": (int, True)},
    "typing": {"channel": (str, True)},
    "ping": {},
}
BASE: dict[str, Any] = {
    "send": {"ref": None, "to": "bob", "body": "fuzz"},
    "history": {"ref": "h", "channel": "dm:alice:bob", "limit": 5},
    "read": {"channel": "dm:alice:bob", "msg_id": 1},
    "typing": {"channel": "dm:alice:bob"},
    "ping": {},
}

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from([0, -1, 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
    st.sampled_from(
        ["", "x" * 65, "x" * 100_001, "dm:alice:bob", "dm:bob:carol", "g:nope", "alice", "bob"]
    ),
    st.binary(max_size=8),
)
values = st.one_of(
    leaves,
    st.lists(leaves, max_size=3),
    st.dictionaries(st.text(max_size=4), leaves, max_size=3),
    st.recursive(leaves, lambda inner: st.lists(inner, max_size=2), max_leaves=6),
)
JSON_ONLY_INTS = [10**30, -(10**30), int("9" * 4000)]  # msgpack cannot carry these
#: JSON texts no encoder produces: over Python's 4,300-digit int limit, deep nesting,
#: non-standard constants, duplicate keys, a BOM, a trailing comma.
ODD_JSON = [
    b'{"type":"read","channel":"dm:alice:bob","msg_id":' + b"9" * 5000 + b"}",
    b'{"type":"history","ref":"h","channel":"dm:alice:bob","before":-' + b"9" * 5000 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"type":' * 50_000 + b"1" + b"}" * 50_000,
    b'{"type":"read","channel":"dm:alice:bob","msg_id":NaN}',
    b'{"type":"history","ref":"h","channel":"dm:alice:bob","limit":-Infinity}',
    b'{"type":"ping","type":"send"}',
    b'\xef\xbb\xbf{"type":"ping"}',
    b'{"type":"ping",}',
    b"",
]
ODD_MSGPACK = [
    b"\x82\xa4type\xa4ping\xa3pad\xa2\xed\xa0",  # a str that is not UTF-8
    b"\x81\x01\xa4ping",  # an int key
    b"\x91" * 100_000 + b"\xc0",  # deep nesting
    b"\xdd\xff\xff\xff\xff",  # an array that claims 4G items
    b"\xc1",  # a reserved byte
    b"\x81\xa4type\xa4ping\xc0",  # trailing data
    b"",
]


def to_msgpack(value: Any) -> Any:
    """What a msgpack client could send for ``value`` (no lone surrogates, 64-bit ints)."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, list):
        return [to_msgpack(v) for v in value]
    if isinstance(value, dict):
        return {to_msgpack(k): to_msgpack(v) for k, v in value.items()}
    return value


def to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return list(value)
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def must_fail(payload: str | bytes, authenticated: bool) -> bool:
    """Whether the server must answer this message with an error frame (it cannot be valid).

    The pure parser decides; any exception but ProtocolError from it is a bug in its own right.
    """
    try:
        parsed = protocol.parse(protocol.decode(payload))
    except protocol.ProtocolError:
        return True
    return authenticated and isinstance(parsed, protocol.Hello)


@st.composite
def client_message(draw: st.DrawFn, binary: bool, token: str) -> dict[str, Any] | Any:
    """A client frame of any type with any of its fields dropped or given a wrong-kind value."""
    kind = draw(st.sampled_from([*FIELDS, "confused"]))
    if kind == "confused":
        obj: Any = {"type": draw(values)}
        if draw(st.booleans()):
            obj = draw(values)  # not even a map
    else:
        base = {"token": token, "since": 0} if kind == "hello" else dict(BASE[kind])
        obj = {"type": kind, **base}
        if "ref" in obj:
            obj["ref"] = f"f{draw(st.integers(0, 10**9))}"
        for name in FIELDS[kind]:
            action = draw(st.sampled_from(["keep", "drop", "confuse", "confuse"]))
            if action == "drop":
                obj.pop(name, None)
            elif action == "confuse":
                obj[name] = draw(st.one_of(values, st.sampled_from(JSON_ONLY_INTS)))
        if draw(st.booleans()):
            obj[draw(st.text(max_size=5))] = draw(values)
    return to_msgpack(obj) if binary else to_json(obj)


def encode(obj: Any, binary: bool) -> tuple[int, bytes, str | bytes]:
    """(opcode, payload, what the server's parser sees)."""
    if binary:
        data = msgpack.packb(obj, use_bin_type=True)
        return 0x2, data, data
    text = json.dumps(obj, allow_nan=True)  # ASCII: lone surrogates become \\ud800 escapes
    return 0x1, text.encode(), text


ITEM_KINDS = [
    "app", "app", "app", "app", "fragmented", "fragmented",
    "odd", "raw", "control", "close", "utf8", "oversize",
]  # fmt: skip
#: codes a client may put in its close frame (valid, reserved, out of range; never 1011)
CLIENT_CLOSE_CODES = [
    None, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1012, 1013,
    1014, 1015, 2999, 3000, 3999, 4000, 4001, 4999, 5000, 65535,
]  # fmt: skip
sizes = st.one_of(
    st.sampled_from([0, 1, 2, 124, 125, 126, 127, 65534, 65535, 65536, 65537]),
    st.integers(0, 300),
)


@st.composite
def items(draw: st.DrawFn, binary: bool, token: str, authenticated: bool) -> Item:
    choice = draw(st.sampled_from(ITEM_KINDS))
    if choice == "odd":
        payload = draw(st.sampled_from(ODD_MSGPACK if binary else ODD_JSON))
        parsed: str | bytes = payload if binary else payload.decode()
        errors = int(must_fail(parsed, authenticated))
        return Item(frame(0x2 if binary else 0x1, payload), errors)
    if choice in ("app", "fragmented"):
        obj = draw(client_message(binary, token))
        opcode, payload, parsed = encode(obj, binary)
        errors = int(must_fail(parsed, authenticated))
        if choice == "app":
            return Item(frame(opcode, payload), errors)
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), min_size=1, max_size=6)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        orphan = draw(st.sampled_from([False, False, False, True]))  # no starting frame
        data = b""
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            data += frame(opcode if i == 0 and not orphan else 0x0, piece, fin=last)
            if not last and draw(st.booleans()):
                data += frame(0x9, b"between")  # control frames may interleave
        return Item(data, errors, clean=not orphan)
    if choice == "raw":
        opcode = draw(st.integers(0, 15))
        size = draw(sizes)
        payload = (draw(st.binary(min_size=1, max_size=64)) * (size // 64 + 1))[:size]
        closes: frozenset[int] = frozenset()
        if opcode == 0x8:  # the server echoes a valid close code; never ask for 1011
            if payload[:2] == struct.pack("!H", 1011):
                payload = struct.pack("!H", 1000) + payload[2:]
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            closes = frozenset({code})
        f = frame(
            opcode,
            payload,
            fin=draw(st.booleans()),
            rsv=draw(st.sampled_from([0, 0, 0, 1, 2, 4, 7])),
            masked=draw(st.sampled_from([True, True, True, False])),
            long_length=draw(st.sampled_from([0, 0, 2, 8])),
        )
        return Item(f, closes=closes, clean=False)
    if choice == "control":
        opcode = draw(st.sampled_from([0x9, 0xA]))
        return Item(frame(opcode, b"p" * draw(sizes)), clean=False)
    if choice == "close":
        code = draw(st.sampled_from(CLIENT_CLOSE_CODES))
        if code is None:
            payload = draw(st.sampled_from([b"", b"\x03"]))
        else:
            reason = draw(st.sampled_from([b"", b"bye", b"\xff\xfe", b"r" * 123]))
            payload = struct.pack("!H", code) + reason
        return Item(frame(0x8, payload), closes=frozenset({code or 1005}), clean=False)
    if choice == "utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"]))
        payload = b'{"type":"ping","x":"' + bad + b'"}'
        if draw(st.booleans()):
            cut = draw(st.integers(1, len(payload) - 1))
            data = frame(0x1, payload[:cut], fin=False) + frame(0x0, payload[cut:])
        else:
            data = frame(0x1, payload)
        return Item(data, clean=False)
    # oversize: over limits.max_frame_bytes, in one frame or in fragments
    size = MIB + draw(st.sampled_from([1, 1000]))
    payload = b'{"type":"ping","pad":"' + b"x" * size + b'"}'
    if draw(st.booleans()):
        data = frame(0x1, payload)
    else:
        half = len(payload) // 2
        data = frame(0x1, payload[:half], fin=False) + frame(0x0, payload[half:])
    return Item(data, clean=False)


@st.composite
def examples(draw: st.DrawFn, token: str) -> tuple[bool, bool, list[Item]]:
    binary = draw(st.booleans())
    authenticated = draw(st.booleans())
    got = draw(st.lists(items(binary, token, authenticated), min_size=1, max_size=5))
    return binary, authenticated, got
