"""Hypothesis-driven WebSocket fuzzing against one live server.

Frames are built by hand (tests/wsfuzz.py): every opcode (reserved ones too), RSV bits,
masked or not, payload sizes around the 125/126/65535/65536 length encodings, non-minimal
length encodings, fragmentation with control frames in between, continuations without a
start, close frames with any code, invalid UTF-8, oversize messages, and JSON or msgpack
client frames of every type with every field replaced by a value of the wrong kind.

For each example a connection is opened (half of them authenticated first), the frames are
sent, and a WebSocket ping is sent last: its pong (or a close) says the server has handled
everything before it. The server must answer with frames of the contract and, if it closes,
with a contract close code, never 1011. After each example ``/healthz`` answers 200, a message
stored before fuzzing is still in history, and a fresh connection still gets an ack.

The server runs in a thread of its own for the whole module (each example is one
``trio.run`` in the test's thread), so examples cost milliseconds, not a server start.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatd.client import ChatClient, HttpClient
from tests.conftest import PASSWORD, make_config, running
from tests.wsfuzz import (
    BASE,
    FIELDS,
    JSON_ONLY_INTS,
    ODD_JSON,
    ODD_MSGPACK,
    Item,
    encode,
    examples,
    frame,
    must_fail,
    to_json,
    to_msgpack,
)
from tests.wsraw import RawWs

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


# -- a raw client (tests/wsraw.py), one per example, closed by the example itself


async def connect(live: Live, binary: bool) -> RawWs:
    protocol = "chatd.v1.msgpack" if binary else "chatd.v1.json"
    ws, head = await RawWs.connect(live.port, protocol=protocol, track=False)
    assert ws is not None, head
    return ws


async def send_raw(ws: RawWs, data: bytes) -> None:
    """Write, unless the server already closed: what it said is still there to be read."""
    try:
        await ws.send_raw(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def until(ws: RawWs, match: Any) -> list[dict[str, Any]]:
    """Data frames up to the first that ``match``es, or up to the close."""
    got = []
    while (f := await ws.recv()) is not None:
        got.append(f)
        if match(f):
            break
    return got


def check_frames(got: list[dict[str, Any]]) -> None:
    for f in got:
        assert isinstance(f, dict) and f.get("type") in SERVER_TYPES, f
        if f["type"] == "error":
            assert f["code"] in ERROR_CODES and isinstance(f["message"], str), f


# -- running one example


async def fuzz_one(live: Live, binary: bool, authenticated: bool, fuzz: list[Item]) -> None:
    ws = await connect(live, binary)
    try:
        if authenticated:
            await ws.send({"type": "hello", "token": live.alice})
            got = await until(ws, lambda f: f["type"] in ("welcome", "error"))
            assert got[-1]["type"] == "welcome", got
        for item in fuzz:
            await send_raw(ws, item.data)
        got = await ws.sync(SYNC)
        check_frames(got)
        asked = frozenset().union(*(item.closes for item in fuzz))
        if ws.close_code is not None:
            assert ws.close_code in CONTRACT_CLOSES | asked, (ws.close_code, got)
            assert ws.close_code != 1011
        elif authenticated and all(item.clean for item in fuzz):
            errors = sum(1 for f in got if f["type"] == "error")
            assert errors >= sum(item.errors for item in fuzz), got
    finally:
        await ws.aclose()


async def still_serving(live: Live) -> None:
    async with HttpClient(live.url) as http:
        assert (await http.request("GET", "/healthz")).status == 200
    async with HttpClient(live.url, token=live.bob) as http:
        page = await http.call("GET", "/v1/channels/dm:alice:bob/messages?before=2")
        assert [m["body"] for m in page["messages"]] == [KNOWN_BODY]
    ws = await connect(live, False)
    try:
        await ws.send({"type": "hello", "token": live.bob})
        ref = f"check-{next(live.refs)}"
        await ws.send({"type": "send", "ref": ref, "to": "alice", "body": "check"})
        got = await until(ws, lambda f: f.get("ref") == ref)
        assert got and got[-1]["type"] == "ack", got
    finally:
        await ws.aclose()


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
        ws = await connect(live, binary)
        await ws.send({"type": "hello", "token": live.alice})
        await until(ws, lambda f: f["type"] == "welcome")
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
        got = await ws.sync(SYNC)
        check_frames(got)
        assert ws.close_code is None, (ws.close_code, got)
        for odd in ODD_MSGPACK if binary else ODD_JSON:
            expected += must_fail(odd if binary else odd.decode(), True)
            await ws.send_raw(frame(0x2 if binary else 0x1, odd))
        got += await ws.sync(SYNC)
        check_frames(got)
        assert ws.close_code is None, (ws.close_code, got)
        assert sum(1 for f in got if f["type"] == "error") >= expected > 100
        await ws.aclose()
        await still_serving(live)

    trio.run(run)
    assert server_bugs(caplog) == []


async def hello_alone(live: Live, obj: Any, binary: bool) -> None:
    """A hello with a wrong field on a fresh connection: welcome, or an error and 4001."""
    ws = await connect(live, binary)
    try:
        await ws.send_raw(frame(*encode(obj, binary)[:2]))
        got = await until(ws, lambda f: f["type"] == "welcome")
        check_frames(got)
        if ws.close_code is not None:
            assert ws.close_code == 4001 and got[-1]["type"] == "error", (ws.close_code, got)
        else:
            assert got[-1]["type"] == "welcome"
    finally:
        await ws.aclose()
