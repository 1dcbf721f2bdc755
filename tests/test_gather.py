"""Gathered writes (chatd/net/outbound.py, ``Gather``): the commit hooks of one batch write to
many connections, and each connection sends what the batch gave it with one ``send`` when the
batch's hooks are done, in order; a long burst to one connection goes out early instead of
counting against its queue cap.

The mechanism is checked on real socket pairs (nothing reaches a peer before the gather ends),
the committer's side on a real LMDB store, and the whole path through a live server: a burst of
sends that commits as one batch reaches the sender (acks) and two other group members (msgs)
complete and in order.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgpack
import pytest
import trio

from chatd.net.outbound import CORK_MAX, Gather, Outbound
from chatd.server import Server
from storage import Store
from tests.conftest import make_user
from tests.test_groups import create_group
from tests.wsraw import RawWs, client_frame, close_all


class Probe(Outbound):
    """An Outbound on one end of a socket pair, with what the tests need of a connection."""

    __slots__ = ("closing", "closed_with")

    def __init__(self, sock: socket.socket, gather: Gather) -> None:
        super().__init__(sock, False, gather)
        self.closing = False
        self.closed_with: tuple[int, str] | None = None

    @property
    def out_cap(self) -> int:
        return 1 << 20

    @property
    def write_stall(self) -> float:
        return 10.0

    def close(self, code: int, reason: str = "") -> None:
        self.closing, self.closed_with = True, (code, reason)

    def _crashed(self) -> None:
        raise AssertionError("the flusher crashed")

    def spawn_flusher(self) -> None:
        raise AssertionError("a socket pair with room needs no flusher")


@contextmanager
def probes(n: int) -> Iterator[tuple[Gather, list[Probe], list[socket.socket]]]:
    gather = Gather()
    pairs = [socket.socketpair() for _ in range(n)]
    for ours, _ in pairs:
        ours.setblocking(False)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    try:
        yield gather, [Probe(ours, gather) for ours, _ in pairs], [peer for _, peer in pairs]
    finally:
        for ours, peer in pairs:
            ours.close()
            peer.close()


def pending(peer: socket.socket) -> bytes:
    """What the peer can read now, without waiting."""
    out = b""
    while True:
        try:
            chunk = peer.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def test_writes_in_a_gather_leave_at_its_end_one_buffer_per_connection_in_order() -> None:
    with probes(3) as (gather, conns, peers):
        with gather:
            for i in range(5):
                for n, conn in enumerate(conns[:2]):
                    conn._write(f"c{n}f{i};".encode())
            assert [pending(p) for p in peers] == [b"", b"", b""]
            assert gather.held == conns[:2]
        assert gather.held == [] and gather.depth == 0
        assert pending(peers[0]) == b"c0f0;c0f1;c0f2;c0f3;c0f4;"
        assert pending(peers[1]) == b"c1f0;c1f1;c1f2;c1f3;c1f4;"
        assert pending(peers[2]) == b""
        # Outside a gather a write goes at once.
        conns[2]._write(b"now")
        assert pending(peers[2]) == b"now"
        assert not any(c.corked or c.out for c in conns)


def test_a_nested_gather_sends_at_the_outermost_end() -> None:
    with probes(1) as (gather, (conn,), (peer,)):
        with gather:
            conn._write(b"a")
            with gather:
                conn._write(b"b")
            assert pending(peer) == b""
            conn._write(b"c")
        assert pending(peer) == b"abc"


def test_a_long_burst_goes_out_early_and_is_not_an_overflow() -> None:
    chunk = b"x" * (CORK_MAX // 2 + 1)
    with probes(1) as (gather, (conn,), (peer,)):
        received = b""
        with gather:
            conn._write(chunk)
            assert pending(peer) == b""
            conn._write(chunk)  # past CORK_MAX: sent now
            received += pending(peer)
            assert len(received) == 2 * len(chunk)
            conn._write(b"tail")
            assert pending(peer) == b""
        received += pending(peer)
        assert received == chunk * 2 + b"tail"
        assert conn.closed_with is None


def test_a_dead_peer_in_a_gather_closes_only_its_connection() -> None:
    with probes(2) as (gather, conns, peers):
        with gather:
            conns[0]._write(b"lost")
            conns[1]._write(b"kept")
            peers[0].close()
            conns[0].sock.shutdown(socket.SHUT_RDWR)
        assert conns[0].closed_with == (1006, "") and conns[0].dead
        assert conns[1].closed_with is None
        assert pending(peers[1]) == b"kept"


async def test_the_committer_runs_each_batchs_hooks_inside_the_hook_scope(
    tmp_path: Path,
) -> None:
    store = Store(str(tmp_path / "data"))
    gather = Gather()
    store.gather_hooks(gather)
    depths: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)

        async def write(i: int) -> None:
            await store.write(lambda tx: i, after_commit=lambda _: depths.append(gather.depth))

        async with trio.open_nursery() as writers:
            for i in range(20):
                writers.start_soon(write, i)
        store.close()
    assert depths == [1] * 20 and gather.depth == 0


@pytest.mark.parametrize("protocol", ["chatd.v1.json", "chatd.v1.msgpack"])
async def test_a_burst_committed_together_reaches_everyone_whole_and_in_order(
    server: Server, protocol: str
) -> None:
    users = [await make_user(server, name) for name in ("gsender", "greader1", "greader2")]
    channel = (await create_group(users[0], "burst", ["greader1", "greader2"]))["channel_id"]
    port = server.port
    raws = []
    try:
        for user in users:
            raw, _ = await RawWs.connect(port, protocol=protocol)
            assert raw is not None
            await raw.send({"type": "hello", "token": user.token})
            assert (await raw.recv() or {}).get("type") == "welcome"
            raws.append(raw)
        sender, *readers = raws
        # 40 sends in one write: one read, one tick, so (almost always) one commit batch.
        burst = b"".join(
            client_frame(
                0x2 if sender.binary else 0x1,
                encode(
                    {"type": "send", "ref": f"r{i}", "channel": channel, "body": f"m{i}"},
                    sender.binary,
                ),
            )
            for i in range(40)
        )
        await sender.send_raw(burst)
        with trio.fail_after(10):
            acks = [f for f in await frames(sender, 40) if f["type"] == "ack"]
            got = [await frames(reader, 40) for reader in readers]
        assert [a["ref"] for a in acks] == [f"r{i}" for i in range(40)]
        msg_ids = [a["msg_id"] for a in acks]
        assert msg_ids == sorted(msg_ids) and len(set(msg_ids)) == 40
        for msgs in got:
            assert [m["body"] for m in msgs] == [f"m{i}" for i in range(40)]
            assert [m["msg_id"] for m in msgs] == msg_ids
            seqs = [m["inbox"] for m in msgs]
            assert seqs == list(range(seqs[0], seqs[0] + 40))
    finally:
        await close_all()


def encode(frame: dict[str, object], binary: bool) -> bytes:
    return msgpack.packb(frame) if binary else json.dumps(frame).encode()  # type: ignore[no-any-return]


async def frames(raw: RawWs, n: int) -> list[dict[str, object]]:
    """The next ``n`` frames of the acks' or msgs' kind (presence and the like skipped)."""
    out: list[dict[str, object]] = []
    while len(out) < n:
        frame = await raw.recv()
        assert frame is not None, f"closed with {raw.close_code}"
        if frame["type"] in ("ack", "msg"):
            out.append(frame)
    return out
