"""Hypothesis-driven WebSocket fuzzing against one live server.

Frames are built by hand: every opcode (reserved ones too), RSV bits, masked or not, payload
sizes around the 125/126/65535/65536 length encodings, non-minimal length encodings,
fragmentation with control frames in between, continuations without a start, close frames
with any code, invalid UTF-8, oversize messages, and JSON or msgpack client frames of every
type with every field replaced by a value of the wrong kind.

For each example a connection is opened (half of them authenticated first), the frames are
sent, and a WebSocket ping is sent last: its pong (or a close) says the server has handled
everything before it. The server must answer with frames of the contract and, if it closes,
with a contract close code, never 1011. After each example ``/healthz`` answers 200, a message
stored before fuzzing is still in history, and a fresh connection still gets an ack.

The server runs in a thread of its own for the whole module (each example is one
``trio.run`` in the test's thread), so examples cost milliseconds, not a server start.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import queue
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Message, Pong

from chatd.client import ChatClient, HttpClient
from chatd.errors import BadRequest
from chatd.protocol import frames as protocol
from tests.conftest import PASSWORD, make_config, running

#: Close codes the contract lets the server use for bad input (the client's own close code
#: is echoed as well).
CONTRACT_CLOSES = {1002, 1003, 1007, 1008, 1009, 4001}
ERROR_CODES = {
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "too_large",
    "rate_limited",
    "unavailable",
    "too_many_sessions",
}
SERVER_TYPES = {
    "error",
    "ack",
    "history",
    "pong",
    "welcome",
    "synced",
    "msg",
    "presence",
    "read",
    "typing",
}
MIB = 1 << 20
SYNC = b"fuzz-sync"
KNOWN_BODY = "known before fuzzing"


# -- the server, once per module


@dataclass
class Live:
    port: int
    url: str
    alice: str  # tokens
    bob: str
    refs: Iterator[int] = field(default_factory=itertools.count)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    limits = {
        "max_sessions_per_user": 1000,
        "read_rate": 1e6,
        "read_burst": 1_000_000,
        "typing_rate": 1e6,
        "typing_burst": 1_000_000,
        "history_rate": 1e6,
        "history_burst": 1_000_000,
        "api_rate": 1e6,
        "api_burst": 1_000_000,
    }
    config = make_config(Path(tmp_path_factory.mktemp("fuzz")) / "data", limits=limits)
    started: queue.Queue[Any] = queue.Queue()

    async def serve() -> None:
        stop = trio.Event()
        try:
            async with running(config) as server:
                started.put((server, trio.lowlevel.current_trio_token(), stop))
                await stop.wait()
        except BaseException as exc:
            started.put(exc)
            raise

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    got = started.get(timeout=30)
    if isinstance(got, BaseException):
        raise got
    server, token, stop = got

    async def setup() -> Live:
        alice = ChatClient(server.url, "alice", PASSWORD)
        bob = ChatClient(server.url, "bob", PASSWORD)
        for client in (alice, bob):
            await client.signup()
            await client.login()
        async with alice.session() as session:
            await session.send(to="bob", body=KNOWN_BODY)
        assert alice.token and bob.token
        return Live(server.port, server.url, alice.token, bob.token)

    try:
        yield trio.run(setup)
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join(30)


# -- a raw client


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    long_length: int = 0,
) -> bytes:
    """One client frame exactly as asked (``long_length`` 2 or 8 forces that length encoding)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv & 7) << 4 | opcode
    mask_bit = 0x80 if masked else 0
    if long_length == 8 or (not long_length and n > 0xFFFF):
        header = struct.pack("!BBQ", b0, mask_bit | 127, n)
    elif long_length == 2 or (not long_length and n > 125):
        header = struct.pack("!BBH", b0, mask_bit | 126, n)
    else:
        header = struct.pack("!BB", b0, mask_bit | n)
    if not masked:
        return header + payload
    key = os.urandom(4)
    stream = (key * (n // 4 + 1))[:n]
    masked_payload = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(
        n, "big"
    )
    return header + key + masked_payload


class Ws:
    """Handshake, raw writes, and events read back (frames decoded, pongs, the close)."""

    def __init__(self, stream: trio.SocketStream, binary: bool) -> None:
        self.stream = stream
        self.binary = binary
        self.ws = Connection(ConnectionType.CLIENT)
        self.close_code: int | None = None
        self.broken = False
        self._pieces: list[Any] = []

    @classmethod
    async def connect(cls, port: int, binary: bool) -> Ws:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        proto = "chatd.v1.msgpack" if binary else "chatd.v1.json"
        request = (
            f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {proto}\r\n\r\n"
        )
        await stream.send_all(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(65536)
            assert chunk, head
            head += chunk
        response, _, rest = head.partition(b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 101"), response
        ws = cls(stream, binary)
        ws.ws.receive_data(rest)
        return ws

    async def send_raw(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            await self.stream.send_all(data)
        except trio.BrokenResourceError:
            self.broken = True  # the server closed first: what it said is still to be read

    async def send(self, obj: Any) -> None:
        if self.binary:
            await self.send_raw(frame(0x2, msgpack.packb(obj)))
        else:
            await self.send_raw(frame(0x1, json.dumps(obj).encode()))

    async def next(self) -> tuple[str, Any]:
        """("frame", dict) | ("pong", payload) | ("close", code)."""
        while True:
            for event in self.ws.events():
                if isinstance(event, Message):
                    self._pieces.append(event.data)
                    if event.message_finished:
                        data = self._pieces[0][:0].join(self._pieces)
                        self._pieces.clear()
                        if isinstance(data, bytes):
                            return "frame", msgpack.unpackb(data)
                        return "frame", json.loads(data)
                elif isinstance(event, Pong):
                    return "pong", event.payload
                elif isinstance(event, CloseConnection):
                    self.close_code = event.code
                    return "close", event.code
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                self.close_code = 1006  # closed without a close frame
                return "close", 1006
            self.ws.receive_data(data)

    async def until(self, kind: str, match: Any = None) -> list[dict[str, Any]]:
        """Server frames up to the next event of ``kind`` (or a close)."""
        got = []
        while True:
            what, value = await self.next()
            if what == "frame":
                got.append(value)
            if what == "close" or (what == kind and (match is None or match(value))):
                return got


def check_frames(got: list[dict[str, Any]]) -> None:
    for f in got:
        assert isinstance(f, dict) and f.get("type") in SERVER_TYPES, f
        if f["type"] == "error":
            assert f["code"] in ERROR_CODES and isinstance(f["message"], str), f


# -- what the fuzzer sends


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

    The pure parser decides; any exception but BadRequest from it is a bug in its own right.
    """
    try:
        parsed = protocol.parse(protocol.decode(payload))
    except BadRequest:
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


# -- running one example


async def fuzz_one(live: Live, binary: bool, authenticated: bool, fuzz: list[Item]) -> None:
    ws = await Ws.connect(live.port, binary)
    try:
        if authenticated:
            await ws.send({"type": "hello", "token": live.alice})
            got = await ws.until("frame", lambda f: f["type"] in ("welcome", "error"))
            assert got[-1]["type"] == "welcome", got
        for item in fuzz:
            await ws.send_raw(item.data)
        await ws.send_raw(frame(0x9, SYNC))
        got = await ws.until("pong", lambda payload: payload == SYNC)
        check_frames(got)
        asked = frozenset().union(*(item.closes for item in fuzz))
        if ws.close_code is not None:
            assert ws.close_code in CONTRACT_CLOSES | asked, (ws.close_code, got)
            assert ws.close_code != 1011
        elif authenticated and all(item.clean for item in fuzz):
            errors = sum(1 for f in got if f["type"] == "error")
            assert errors >= sum(item.errors for item in fuzz), got
    finally:
        await ws.stream.aclose()


async def still_serving(live: Live) -> None:
    async with HttpClient(live.url) as http:
        assert (await http.request("GET", "/healthz")).status == 200
    async with HttpClient(live.url, token=live.bob) as http:
        page = await http.call("GET", "/v1/channels/dm:alice:bob/messages?before=2")
        assert [m["body"] for m in page["messages"]] == [KNOWN_BODY]
    ws = await Ws.connect(live.port, False)
    try:
        await ws.send({"type": "hello", "token": live.bob})
        ref = f"check-{next(live.refs)}"
        await ws.send({"type": "send", "ref": ref, "to": "alice", "body": "check"})
        got = await ws.until("frame", lambda f: f.get("ref") == ref)
        assert got and got[-1]["type"] == "ack", got
    finally:
        await ws.stream.aclose()


def server_bugs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("chatd") and r.levelno >= logging.ERROR
    ]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzzed_frames_never_break_the_server(
    live: Live, caplog: pytest.LogCaptureFixture, data: st.DataObject
) -> None:
    binary, authenticated, fuzz = data.draw(examples(live.alice))

    async def run() -> None:
        with trio.fail_after(20):
            await fuzz_one(live, binary, authenticated, fuzz)
            await still_serving(live)

    trio.run(run)
    assert server_bugs(caplog) == []


@pytest.mark.parametrize("binary", [False, True])
def test_every_field_of_every_frame_with_every_wrong_kind(
    live: Live, caplog: pytest.LogCaptureFixture, binary: bool
) -> None:
    """Not left to chance: each field of each client frame type gets each kind of wrong
    value, on an authenticated connection (hello's fields on fresh ones); every one that
    cannot be valid is answered with an error frame and the connection stays open."""
    wrong: list[Any] = [
        None, True, -1, 2**63, 1.5, float("nan"), "", "x" * 100_001, "\ud800", b"\x00",
        [1], {"a": 1}, [[[[]]]], {"type": "ping"},
    ]  # fmt: skip
    if not binary:
        wrong += JSON_ONLY_INTS

    async def run() -> None:
        ws = await Ws.connect(live.port, binary)
        await ws.send({"type": "hello", "token": live.alice})
        await ws.until("frame", lambda f: f["type"] == "welcome")
        expected = 0
        for kind, fields in FIELDS.items():
            for name in [*fields, "type"]:
                for value in wrong:
                    base = {"token": live.alice} if kind == "hello" else dict(BASE[kind])
                    obj = {"type": kind, **base, name: value}
                    if "ref" in obj and name != "ref":
                        obj["ref"] = f"w{next(live.refs)}"
                    obj = to_msgpack(obj) if binary else to_json(obj)
                    if kind == "hello" and name != "type":
                        await hello_alone(live, obj, binary)
                        continue
                    opcode, payload, parsed = encode(obj, binary)
                    expected += must_fail(parsed, True)
                    await ws.send_raw(frame(opcode, payload))
        await ws.send_raw(frame(0x9, SYNC))
        got = await ws.until("pong", lambda payload: payload == SYNC)
        check_frames(got)
        assert ws.close_code is None, (ws.close_code, got)
        for odd in ODD_MSGPACK if binary else ODD_JSON:
            expected += must_fail(odd if binary else odd.decode(), True)
            await ws.send_raw(frame(0x2 if binary else 0x1, odd))
        await ws.send_raw(frame(0x9, SYNC))
        got += await ws.until("pong", lambda payload: payload == SYNC)
        check_frames(got)
        assert ws.close_code is None, (ws.close_code, got)
        assert sum(1 for f in got if f["type"] == "error") >= expected > 100
        await ws.stream.aclose()
        await still_serving(live)

    trio.run(run)
    assert server_bugs(caplog) == []


async def hello_alone(live: Live, obj: Any, binary: bool) -> None:
    """A hello with a wrong field on a fresh connection: welcome, or an error and 4001."""
    ws = await Ws.connect(live.port, binary)
    try:
        await ws.send_raw(frame(*encode(obj, binary)[:2]))
        got = await ws.until("frame", lambda f: f["type"] == "welcome")
        check_frames(got)
        if ws.close_code is not None:
            assert ws.close_code == 4001 and got[-1]["type"] == "error", (ws.close_code, got)
        else:
            assert got[-1]["type"] == "welcome"
    finally:
        await ws.stream.aclose()
