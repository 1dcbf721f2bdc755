"""Token expiry on open WebSockets and the background sweep of expired tokens and old refs,
on trio's MockClock (token and ref stamps are wall-clock ms; socket timers run on trio time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from chatd.client import HttpClient
from chatd.domain.accounts import now_ms, token_digest
from chatd.domain.messaging_tx import append_message
from chatd.server import Server
from storage import Message, Store, WriteTx
from tests import wsraw
from tests.conftest import make_config, make_user, running
from tests.wsraw import RawWs

TTL = 5.0  # seconds
HOUR_MS = 3_600_000


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Virtual time jumps once the loop has idled for 10 real ms (see tests/test_presence.py).
    return trio.testing.MockClock(autojump_threshold=0.01)


@pytest.fixture(autouse=True)
async def close_raw_sockets() -> AsyncIterator[None]:
    yield
    await wsraw.close_all()


async def hello(server: Server, token: str) -> RawWs:
    ws, head = await RawWs.connect(server.port)
    assert ws is not None, head
    await ws.send({"type": "hello", "token": token})
    welcome = await ws.recv()
    assert welcome is not None and welcome["type"] == "welcome", welcome
    return ws


async def still_open(ws: RawWs) -> None:
    await ws.send({"type": "ping"})
    assert await ws.recv() == {"type": "pong"}


async def test_socket_closes_4001_when_its_token_expires(
    data_dir: Path, clock: trio.testing.MockClock
) -> None:
    config = make_config(data_dir, security={"token_ttl_days": TTL / 86_400})
    async with running(config) as server:
        alice = await make_user(server, "alice")
        # A second token of alice's that lives an hour: its socket must outlive the first.
        await server.app.store.put_token(token_digest("long-lived"), "alice", now_ms() + HOUR_MS)
        start = trio.current_time()
        ws = await hello(server, alice.token)
        keep = await hello(server, "long-lived")
        await trio.sleep(TTL - 2)
        await still_open(ws)  # not before it expires
        with trio.fail_after(60):
            frames = await ws.recv_until_closed()
        assert [(f["type"], f["code"]) for f in frames] == [("error", "unauthorized")]
        assert ws.close_code == 4001
        assert trio.current_time() - start >= TTL - 1
        await still_open(keep)


async def test_sweep_purges_expired_tokens_and_refs_past_retention(
    data_dir: Path, clock: trio.testing.MockClock
) -> None:
    config = make_config(data_dir, storage={"sweep_interval": 60.0, "ref_retention_hours": 24.0})
    async with running(config) as server:
        store = server.app.store
        alice, _ = await make_user(server, "alice"), await make_user(server, "bob")
        async with alice.session() as a:
            recent = await a.send(to="bob", body="recent", ref="recent")
        day_ago = now_ms() - 25 * HOUR_MS
        op = partial(
            append_message,
            sender="alice",
            ref="old",
            channel="dm:alice:bob",
            members=["alice", "bob"],
            body="a day ago",
            ts=day_ago,
        )
        old = await store.write(op)
        await store.put_token(token_digest("expired"), "alice", now_ms() - 1)
        assert store.sent_ack("alice", "old") is not None

        # Two more refs walks than now (one an hour, sweeper.REFS_EVERY): one may have begun
        # before the writes above (virtual time jumps while signups hash passwords in
        # threads), the next began after them.
        sweeper = server.app.sweeper
        after, passes = sweeper.ref_walks + 2, sweeper.passes
        with trio.fail_after(3 * 3600):
            while sweeper.ref_walks < after:  # noqa: ASYNC110 (virtual time)
                await trio.sleep(1)
        assert sweeper.passes - passes >= 30  # tokens every minute, refs once an hour
        assert store.sent_ack("alice", "old") is None
        assert store.sent_ack("alice", "recent") is not None
        assert store.token(token_digest("expired")) is None
        assert store.token(token_digest(alice.token)) is not None  # alice's live login

        async with alice.session() as a:
            # Within retention: the original ack, nothing stored.
            assert await a.send(to="bob", body="other", ref="recent") == recent
            # Past retention and purged: a new message.
            again = await a.send(to="bob", body="a day ago", ref="old")
        assert again["msg_id"] == old.ack["msg_id"] + 1 and again["ts"] > day_ago
        history = store.channel_page("dm:alice:bob")
        assert [m.body for m in history] == ["recent", "a day ago", "a day ago"]


def put_refs(tx: WriteTx, refs: list[tuple[str, str, int]]) -> None:
    """Each ref with a message of its own: a ref's ts is its message's."""
    for msg_id, (user, ref, ts) in enumerate(refs, 1):
        tx.message_put(Message("g:c", msg_id, user, "b", ts))
        tx.ref_put(user, ref, {"channel": "g:c", "msg_id": msg_id, "ts": ts})


async def test_purge_runs_in_bounded_chunks_resuming_from_a_key(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), sync=False)
    now = now_ms()
    cutoff = now - HOUR_MS
    refs = [(f"user{i % 7}", f"r{i}", now - 2 * HOUR_MS if i % 5 else now) for i in range(2500)]
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.write(lambda tx: put_refs(tx, refs))
        ops_before = store.committer.ops
        start: bytes | None = b""
        chunks, deleted = 0, 0
        while start is not None:
            start, n = await store.purge_chunk("refs", cutoff, start, limit=1000)
            assert n <= 1000
            chunks, deleted = chunks + 1, deleted + n
        assert chunks == 3 and store.committer.ops - ops_before == 3  # one write op per chunk
        assert deleted == 2000
        for user, ref, ts in refs:
            assert (store.sent_ack(user, ref) is None) == (ts < cutoff)
        store.close()


async def test_logout_signs_the_socket_out_like_expiry(
    data_dir: Path, clock: trio.testing.MockClock
) -> None:
    async with running(make_config(data_dir)) as server:
        alice = await make_user(server, "alice")
        ws = await hello(server, alice.token)
        async with HttpClient(server.url, token=alice.token) as http:
            assert (await http.request("POST", "/v1/logout")).status == 204
        with trio.fail_after(60):
            frames = await ws.recv_until_closed()
        assert [(f["type"], f["code"]) for f in frames] == [("error", "unauthorized")]
        assert ws.close_code == 4001
