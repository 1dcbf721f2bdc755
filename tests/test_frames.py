"""The codec's errors over a real connection: the WebSocket shell answers every
:class:`~chatd.protocol.errors.ProtocolError` with the same ``error`` frame a domain error gets,
closes 4001 before the hello and stays open after it. (The codec itself is tested without a
socket in tests/protocol/test_frames.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.net.errormap import CLOSE_CODE
from chatd.protocol import frames
from chatd.server import Server
from tests import wsraw
from tests.conftest import make_user
from tests.protocol.test_frames import NOT_FRAMES
from tests.wsraw import RawWs, client_frame


@pytest.fixture
async def close_raw_sockets() -> AsyncIterator[None]:
    yield
    await wsraw.close_all()


# Raw client messages the codec refuses: (opcode, payload).
MALFORMED: dict[str, tuple[int, bytes]] = {
    "not JSON": (0x1, b"{nope"),
    "not msgpack": (0x2, b"\xc1"),
    "not a map": (0x1, b"[1, 2]"),
    "no type": (0x1, b'{"token": "t"}'),
    "unknown type": (0x1, b'{"type": "dance"}'),
    "hello without token": (0x1, b'{"type": "hello"}'),
    "hello with a negative since": (
        0x2,
        msgpack.packb({"type": "hello", "token": "t", "since": -1}),
    ),
    "send with a ref, no body": (0x1, b'{"type": "send", "ref": "r1", "to": "bob"}'),
}


def test_codec_errors_leave_an_authenticated_connection_open() -> None:
    """Every refusal of the codec carries a code the transport's close table does not close on
    (a malformed frame after the hello is answered and the connection stays open)."""
    wire = [p.decode() if op == 0x1 else p for op, p in MALFORMED.values()]
    for data in [*NOT_FRAMES, *wire]:
        with pytest.raises(frames.ProtocolError) as info:
            frames.parse(frames.decode(data))
        assert info.value.code == "bad_request"
        assert CLOSE_CODE.get(info.value.code) is None


@pytest.mark.usefixtures("close_raw_sockets")
@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_a_malformed_first_frame_gets_bad_request_then_close_4001(
    server: Server, name: str
) -> None:
    ws, head = await RawWs.connect(server.port)
    assert ws is not None, head
    await ws.send_raw(client_frame(*MALFORMED[name]))
    got = await ws.recv_until_closed()
    assert [(f["type"], f["code"]) for f in got] == [("error", "bad_request")], got
    assert ws.close_code == 4001
    await ws.aclose()  # the server's close handshake ends at once, not after its 2 s flush


@pytest.mark.usefixtures("close_raw_sockets")
@pytest.mark.parametrize("binary", [False, True])
async def test_a_malformed_frame_after_hello_gets_the_error_frame_with_its_ref(
    server: Server, binary: bool
) -> None:
    alice = await make_user(server, "alice")
    ws, head = await RawWs.connect(
        server.port, protocol="chatd.v1.msgpack" if binary else "chatd.v1.json"
    )
    assert ws is not None, head
    await ws.send(frames.hello_frame(alice.token or ""))
    welcome = await ws.recv()
    assert welcome is not None and welcome["type"] == "welcome"
    await ws.send_raw(client_frame(*MALFORMED["send with a ref, no body"]))
    error = await ws.recv()
    assert error == {
        "type": "error",
        "code": "bad_request",
        "message": "missing field 'body'",
        "ref": "r1",
    }
    await ws.send(frames.ping_frame())
    assert await ws.recv() == {"type": "pong"}
    await ws.aclose()


@given(
    channel=st.text(min_size=1, max_size=40),
    msg_id=st.integers(min_value=1, max_value=2**53),
    sender=st.text(min_size=1, max_size=32),
    body=st.text(max_size=300),
    long=st.sampled_from([0, 200, 70_000]),  # body padding: every frame-length header
    ts=st.integers(min_value=0, max_value=2**48),
    seq=st.integers(min_value=1, max_value=2**64 - 1),
    binary=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_a_spliced_msg_frame_is_the_encoded_frame_byte_for_byte(
    channel: str, msg_id: int, sender: str, body: str, long: int, ts: int, seq: int, binary: bool
) -> None:
    """Fan-out encodes a message's fields once and splices each member's inbox seq in
    (frames.msg_parts / encode_msg): the bytes must be what encode() makes of the whole frame,
    in both subprotocols and for every frame-length header."""
    body += "é" * long
    view = {"channel": channel, "msg_id": msg_id, "from": sender, "body": body, "ts": ts}
    try:
        whole = frames.encode({"type": "msg", "inbox": seq, **view}, binary)
    except UnicodeEncodeError:  # a lone surrogate: JSON refuses it either way
        with pytest.raises(UnicodeEncodeError):
            frames.msg_parts(view, binary)
        return
    assert frames.encode_msg(frames.msg_parts(view, binary), seq, binary) == whole
