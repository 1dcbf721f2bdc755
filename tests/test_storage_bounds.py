"""Bounded storage paths: the commit queue's byte cap and the paginated channel list."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio
import trio.testing

from chatd.client import ChatClient, HttpClient
from chatd.domain.accounts import now_ms
from chatd.domain.messaging_tx import Appended, append_message
from storage import Store, WriteTx, message_bytes
from tests.conftest import make_config, make_user, running

BIG = "x" * 100_000  # a maximal message body


def submit(store: Store, ref: str, done: list[Any], body: str = BIG) -> None:
    def on_done(appended: Appended | None, error: BaseException | None) -> None:
        done.append(error or appended)

    op = partial(
        append_message,
        sender="alice",
        ref=ref,
        channel="dm:alice:bob",
        members=["alice", "bob"],
        body=body,
        ts=1000,
    )
    store.submit(op, on_done, size=message_bytes(body))


async def barrier(store: Store) -> None:
    """Return once everything queued before is committed (commits and hooks run in order)."""
    await store.put_token(b"barrier", "alice", 0)


def fill(store: Store, done: list[Any]) -> int:
    """Submit big messages until the queue refuses one; return how many it took."""
    for i in range(1000):
        try:
            submit(store, f"r{i}", done)
        except trio.WouldBlock:
            return i
    raise AssertionError("1,000 queued 100k-character messages and no WouldBlock")


async def test_commit_queue_refuses_submits_past_its_byte_cap(tmp_path: Path) -> None:
    # 1 MiB holds only a few 100k-character messages; the op cap (100,000) is far away.
    store = Store(str(tmp_path / "db"), sync=False, max_queue_bytes=1 << 20)
    done: list[Any] = []
    accepted = fill(store, done)
    assert 1 <= accepted < 20
    assert store.committer.queued_bytes <= 1 << 20
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await barrier(store)
        # Committed ops give their bytes back: the queue takes sends again.
        assert store.committer.queued_bytes == 0
        submit(store, "after", done)
        await barrier(store)
        store.close()
    assert all(isinstance(d, Appended) for d in done)
    assert [d.message.msg_id for d in done] == list(range(1, accepted + 2))


async def test_awaited_write_waits_for_room_instead_of_queueing(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), sync=False, max_queue_bytes=1 << 20)
    done: list[Any] = []
    accepted = fill(store, done)
    queued = store.committer.queued_bytes
    result: list[Appended] = []

    async def write() -> None:
        op = partial(
            append_message,
            sender="bob",
            ref="w",
            channel="dm:alice:bob",
            members=["alice", "bob"],
            body=BIG,
            ts=2000,
        )
        result.append(await store.write(op, size=message_bytes(BIG)))

    async with trio.open_nursery() as committer:
        async with trio.open_nursery() as writers:
            writers.start_soon(write)
            await trio.testing.wait_all_tasks_blocked()
            # The writer waits for room: nothing more was queued, nothing committed.
            assert store.committer.queued_bytes == queued and not result
            await committer.start(store.run)
        store.close()
    assert len(done) == accepted
    assert result[0].message.msg_id == accepted + 1 and result[0].message.sender == "bob"


async def test_one_op_larger_than_the_cap_still_commits_alone(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), sync=False, max_queue_bytes=1024)
    done: list[Any] = []
    submit(store, "huge", done)  # an empty queue takes it, so a cap below one op never blocks
    try:
        submit(store, "next", done)
        raise AssertionError("a second op was queued past the byte cap")
    except trio.WouldBlock:
        pass
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await barrier(store)
        store.close()
    assert isinstance(done[0], Appended) and done[0].message.body == BIG


# -- the channel list


async def test_channel_list_reads_no_message_records(tmp_path: Path) -> None:
    """Listing a user's channels costs one small record per channel, never a message body."""
    store = Store(str(tmp_path / "db"), sync=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for i, other in enumerate(["bob", "carol", "dave"]):
            channel = f"dm:alice:{other}"
            for n in range(2):
                op = partial(
                    append_message,
                    sender=other,
                    ref=f"r{n}",
                    channel=channel,
                    members=["alice", other],
                    body=BIG,
                    ts=1000 * (i + 1) + n,
                )
                await store.write(op, size=message_bytes(BIG))
        # Take the message records away: the listing must not need them.
        await store.write(partial(drop_messages, channels=["bob", "carol", "dave"]))
        assert store.channel_page("dm:alice:bob") == []
        page = store.channels("alice", limit=10)
        assert [(s.channel, s.last_msg_id, s.last_ts, s.read_msg_id) for s in page] == [
            ("dm:alice:dave", 2, 3001, 0),
            ("dm:alice:carol", 2, 2001, 0),
            ("dm:alice:bob", 2, 1001, 0),
        ]
        # A page starts strictly after the (ts, channel) of the previous page's last row.
        assert [
            s.channel for s in store.channels("alice", limit=1, after=(3001, "dm:alice:dave"))
        ] == ["dm:alice:carol"]
        store.close()


def drop_messages(tx: WriteTx, channels: list[str]) -> None:
    for other in channels:
        for msg_id in (1, 2):
            assert tx.message_delete(f"dm:alice:{other}", msg_id)


async def next_ms() -> None:
    """Wait until the wall clock (which stamps ``ts``) has moved to a later millisecond."""
    start = now_ms()
    while now_ms() == start:  # noqa: ASYNC110 (the wall clock has no event to wait on)
        await trio.sleep(0.001)


async def api(client: ChatClient, path: str) -> Any:
    async with HttpClient(client.base_url, token=client.token) as http:
        return await http.request("GET", path)


async def test_get_channels_is_paginated_most_recent_first(data_dir: Path) -> None:
    async with running(make_config(data_dir)) as server:
        alice = await make_user(server, "alice")
        others = [await make_user(server, name) for name in ("bob", "carol", "dave", "erin")]
        groups = []
        async with HttpClient(server.url, token=alice.token) as http:
            for i in range(3):
                body = {"name": f"club {i}", "members": ["bob"]}
                groups.append((await http.call("POST", "/v1/groups", body))["channel_id"])
        async with alice.session() as a:
            for other in others:
                await a.send(to=other.user_id, body="hello")
            await next_ms()  # ts has millisecond resolution: make "last" unambiguous
            await a.send(channel=groups[0], body="to the club")
        full = (await api(alice, "/v1/channels")).json()
        assert full["next"] is None and len(full["channels"]) == 7
        ids = [c["channel_id"] for c in full["channels"]]
        assert ids[0] == groups[0]  # the last message sent
        assert set(ids[-2:]) == set(groups[1:])  # no message yet: last
        # Pages of two, following `next`, give the same list in the same order.
        paged, cursor, pages = [], "", 0
        while True:
            query = "/v1/channels?limit=2" + (f"&cursor={quote(cursor)}" if cursor else "")
            body = (await api(alice, query)).json()
            assert len(body["channels"]) <= 2
            paged += body["channels"]
            pages += 1
            if body["next"] is None:
                break
            cursor = body["next"]
        assert paged == full["channels"] and pages == 4
        # New activity moves a channel to the front.
        async with alice.session() as a:
            await next_ms()
            await a.send(to="erin", body="again")
        first = (await api(alice, "/v1/channels?limit=1")).json()
        assert [c["channel_id"] for c in first["channels"]] == ["dm:alice:erin"]
        assert first["next"] is not None
        # A limit above 500 is clamped, not refused.
        assert len((await api(alice, "/v1/channels?limit=100000")).json()["channels"]) == 7
        for bad in (
            "limit=0",
            "limit=-1",
            "limit=x",
            "limit=" + "9" * 5000,
            "cursor=nope",
            "cursor=12",
            "limit=1&limit=2",
        ):
            response = await api(alice, f"/v1/channels?{bad}")
            assert response.status == 400, bad
            assert response.json()["error"] == "bad_request", bad


async def test_the_writers_id_cache_stays_under_its_limit_and_seqs_stay_right(
    tmp_path: Path,
) -> None:
    """The writer's cache of last ids is cleared past its limit; ids read again from the keys
    continue where they were (no seq reused or skipped)."""
    store = Store(str(tmp_path / "data"))
    counters = store.env.counters
    counters.limit = 50
    users = [f"u{i:03}" for i in range(40)]
    sizes = []
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for round_ in range(1, 4):
            for start in range(0, len(users), 10):
                batch = users[start : start + 10]
                seqs = await store.write(
                    lambda tx, batch=batch, m=round_: tx.inbox_append_many(batch, "g:cache", m)
                )
                assert seqs == dict.fromkeys(batch, round_)
                sizes.append(len(counters.committed))
        store.close()
    assert max(sizes) <= counters.limit and min(sizes) < max(sizes)  # it was cleared
