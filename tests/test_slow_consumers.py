"""Slow consumers (issue 16): one device that stops reading never holds up the others, is closed
1008 once its outbound queue passes ``limits.outbound_queue_bytes`` or its socket takes nothing
for ``limits.write_stall_timeout``, and loses nothing: reconnecting with ``since`` brings every
message it missed exactly once, in order.

The stalled device is a raw socket with a tiny ``SO_RCVBUF`` that stops calling ``recv`` after
its ``welcome``, so the server's socket really fills up. The write-stall timer runs on a
``MockClock`` (rate 1, so I/O and polling run in real time) that the test jumps past the
timeout. The full-size figures (99 healthy devices at 1,000 msg/s) come from
``python -m bench slow`` (bench/README.md).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Request,
    TextMessage,
)

from chatd.client import ChatClient, HttpClient
from chatd.net.outbound import OVERFLOW_REASON
from chatd.server import Server
from tests.conftest import make_config, make_user, running

FAST_STORAGE = {"sync": False, "unsafe_fast_commit": True}
BODY = "z" * 2000


class StalledReader:
    """A WebSocket device on a raw socket with a small receive buffer that stops reading after
    ``welcome``; :meth:`read_rest` later reads what the kernel still holds for it."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._text = ""

    @classmethod
    async def connect(cls, port: int, token: str, rcvbuf: int = 4096) -> StalledReader:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window
        await sock.connect(("127.0.0.1", port))
        self = cls(sock)
        request = Request(host=f"127.0.0.1:{port}", target="/v1/ws", subprotocols=["chatd.v1.json"])
        await sock.send(self.ws.send(request))
        await self._until(lambda e: isinstance(e, AcceptConnection))
        await sock.send(self.ws.send(Message(data=json.dumps({"type": "hello", "token": token}))))
        await self._until(lambda e: bool(self.frames) and self.frames[0]["type"] == "welcome")
        self.frames.pop(0)
        return self

    def _on_events(self) -> bool:
        """Handle wsproto's events; True once the server's close frame came."""
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self._text += event.data
                if event.message_finished:
                    self.frames.append(json.loads(self._text))
                    self._text = ""
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                return True
        return False

    async def _until(self, done: Any) -> None:
        with trio.fail_after(10):
            while True:
                data = await self.sock.recv(65536)
                assert data, "closed during the handshake"
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        self.frames.append(json.loads(event.data))
                    if done(event):
                        return

    async def read_rest(self) -> list[dict[str, Any]]:
        """Read until the server's close frame or end of stream; the ``msg`` frames read."""
        with trio.fail_after(20):
            while True:
                try:
                    data = await self.sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                self.ws.receive_data(data)
                if self._on_events():
                    break
        self.sock.close()
        return [f for f in self.frames if f["type"] == "msg"]


@pytest.fixture
def clock() -> MockClock:
    """Trio's clock for the test, running at real speed until the test jumps it."""
    return MockClock(rate=1.0)


async def make_group(server: Server, owner: ChatClient, members: list[str]) -> str:
    async with HttpClient(server.url, token=owner.token) as http:
        group = await http.call("POST", "/v1/groups", {"name": "slow", "members": members})
    return str(group["channel_id"])


async def wait_for(predicate: Any, secs: float = 10.0) -> None:
    with trio.fail_after(secs):
        while not predicate():  # noqa: ASYNC110 (server state with no event of its own)
            await trio.sleep(0.01)


class Healthy:
    """A reading device (the client library) that records every ``msg`` body it gets."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.bodies: list[str] = []
        self.seqs: list[int] = []

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.client.session(heartbeat=None) as s:
            task_status.started()
            async for msg in s.messages():
                self.bodies.append(msg["body"])
                self.seqs.append(msg["inbox"])


async def next_msg(session: Any) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = await session.next_frame()
        if frame["type"] == "msg":
            return frame


async def resync_exactly_once(
    server: Server, client: ChatClient, channel: str, sender: Any, since: int, missed: list[str]
) -> None:
    """Reconnect ``client`` with ``since``: it must get ``missed`` (bodies), each once, in order,
    and then nothing more until a marker sent afterwards."""
    got: list[dict[str, Any]] = []
    async with client.session(since=since, heartbeat=None) as s:
        with trio.fail_after(30):
            while len(got) < len(missed):
                got.append(await next_msg(s))
            await sender.send(channel=channel, body="marker")
            after = await next_msg(s)
    assert [m["body"] for m in got] == missed
    assert [m["inbox"] for m in got] == list(range(since + 1, since + 1 + len(missed)))
    assert after["body"] == "marker"  # nothing replayed twice in between
    assert after["inbox"] == since + len(missed) + 1


async def test_a_reader_that_stops_is_closed_1008_at_the_queue_cap_and_resyncs_exactly_once(
    data_dir: Path,
) -> None:
    cap = 64 * 1024
    config = make_config(
        data_dir,
        limits={"outbound_queue_bytes": cap, "write_stall_timeout": 600.0},
        storage=FAST_STORAGE,
    )
    async with running(config) as server:
        alice = await make_user(server, "alice")
        bob = await make_user(server, "bob")
        healthy = [Healthy(await make_user(server, f"healthy{i}")) for i in range(3)]
        channel = await make_group(server, alice, ["bob", "healthy0", "healthy1", "healthy2"])
        stalled = await StalledReader.connect(server.port, str(bob.token))
        wsets = server.app.lifecycle.websockets
        (conn,) = [c for c in server.app.ws.conns if c.user_id == "bob"]
        sent: list[str] = []
        async with trio.open_nursery() as nursery:
            for h in healthy:
                await nursery.start(h.run)
            async with alice.session(heartbeat=None) as a:
                with trio.fail_after(60):
                    while not conn.closing:
                        body = f"{len(sent):04d}{BODY}"
                        await a.send(channel=channel, body=body)
                        sent.append(body)
                        assert len(sent) < 2000, "the stalled reader was never closed"
                    # It reads again within the close's flush window: what the kernel and the
                    # queue held for it, in order, then the close frame (a reader that stays
                    # away longer finds the connection reset instead: the server only waits
                    # ``CLOSE_FLUSH_TIMEOUT`` for the close frame to go out).
                    read = await stalled.read_rest()
                    assert stalled.close_code == 1008
                    seqs = [f["inbox"] for f in read]
                    assert seqs == list(range(1, len(seqs) + 1))
                    assert 0 < len(read) <= len(sent)  # the queue's bytes came before the close
                    assert (conn.close_code, conn.close_reason) == (1008, OVERFLOW_REASON)
                    # More after the close: the healthy devices keep getting them.
                    for _ in range(50):
                        body = f"{len(sent):04d}{BODY}"
                        await a.send(channel=channel, body=body)
                        sent.append(body)
                    await wait_for(lambda: all(len(h.bodies) == len(sent) for h in healthy))
                await wait_for(lambda: wsets.overflows == 1)  # counted as it left
                assert wsets.closes == {1008: 1} and wsets.stalls == 0
                for h in healthy:
                    assert h.bodies == sent  # everything, in order, never held up
                    assert h.seqs == list(range(1, len(sent) + 1))
                missed = sent[len(read) :]
                await resync_exactly_once(server, bob, channel, a, len(read), missed)
            nursery.cancel_scope.cancel()


async def test_a_reader_that_stops_below_the_cap_is_closed_after_the_write_stall(
    data_dir: Path, clock: MockClock
) -> None:
    stall = 10.0
    config = make_config(data_dir, limits={"write_stall_timeout": stall}, storage=FAST_STORAGE)
    async with running(config) as server:
        alice = await make_user(server, "alice")
        bob = await make_user(server, "bob")
        healthy = Healthy(await make_user(server, "healthy0"))
        channel = await make_group(server, alice, ["bob", "healthy0"])
        stalled = await StalledReader.connect(server.port, str(bob.token))
        wsets = server.app.lifecycle.websockets

        def bob_queued() -> int:
            return sum(c.out_bytes for c in server.app.ws.conns if c.user_id == "bob")

        sent: list[str] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(healthy.run)
            async with alice.session(heartbeat=None) as a:
                with trio.fail_after(30):
                    while not bob_queued():  # the kernel's buffers are full: bytes wait
                        body = f"{len(sent):04d}{BODY}"
                        await a.send(channel=channel, body=body)
                        sent.append(body)
                queued = bob_queued()
                assert 0 < queued < server.app.config.limits.outbound_queue_bytes
                clock.jump(stall / 2)
                await trio.sleep(0.2)
                assert not wsets.closes and wsets.stalls == 0  # not yet
                clock.jump(stall / 2 + 1)
                await wait_for(lambda: wsets.stalls == 1)
                assert wsets.closes == {1008: 1} and wsets.overflows == 0
                # The other device was never held up.
                await wait_for(lambda: len(healthy.bodies) == len(sent))
                assert healthy.bodies == sent
                read = await stalled.read_rest()
                seqs = [f["inbox"] for f in read]
                assert seqs == list(range(1, len(seqs) + 1)) and len(read) < len(sent)
                await resync_exactly_once(server, bob, channel, a, len(read), sent[len(read) :])
            nursery.cancel_scope.cancel()


async def test_write_stall_timeout_is_a_validated_key(tmp_path: Path) -> None:
    from chatd.config import ConfigError, load

    path = tmp_path / "c.toml"
    path.write_text("[limits]\nwrite_stall_timeout = 0\n")
    with pytest.raises(ConfigError, match=r"limits\.write_stall_timeout"):
        load(path)
    path.write_text("[limits]\nwrite_stall_timeout = 2.5\n[server]\naccept_rate = 50.0\n")
    config = load(path)
    assert config.limits.write_stall_timeout == 2.5 and config.server.accept_rate == 50.0
