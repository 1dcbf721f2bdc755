"""History retention and the ref window on trio's MockClock: the sweep purges messages older
than ``storage.history_retention_days`` and the inbox entries before the first kept one, in
bounded chunks, and keeps everything newer (docs/protocol.md "Retention")."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from chatd.domain.messaging_tx import append_message
from chatd.domain.sweeper import REFS_EVERY, Sweeper
from storage import ReadTx, Store

DAY = 86_400_000
BASE = 1_700_000_000_000
DM = "dm:alice:bob"


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def frozen() -> int:
    """The sweeper's wall clock: BASE, whatever the mock clock does. (It jumps whenever every
    task waits, and they all wait on the committer's thread, so one pass may take virtual
    hours; a clock following it would move the cutoffs under the checks.)"""
    return BASE


async def ten_days(store: Store) -> None:
    """One DM a day for ten days (the last a day old), and a group message of today."""
    for i in range(10):
        sender = "alice" if i % 2 == 0 else "bob"
        await store.write(
            partial(
                append_message,
                sender=sender,
                ref=f"r{i}",
                channel=DM,
                members=["alice", "bob"],
                body=f"day {i}",
                ts=BASE - (10 - i) * DAY,
            )
        )
    for i in (9, 8):  # a channel whose every message is past retention
        await store.write(
            partial(
                append_message,
                sender="dave",
                ref=f"old{i}",
                channel="dm:dave:erin",
                members=["dave", "erin"],
                body=f"{i} days ago",
                ts=BASE - i * DAY,
            )
        )
    await store.write(
        partial(
            append_message,
            sender="carol",
            ref="today",
            channel="g:group0001",
            members=["alice", "carol"],
            body="now",
            ts=BASE,
        )
    )


async def passes(sweeper: Sweeper, n: int) -> None:
    """Until the sweeper has made ``n`` passes (each waits on the committer's thread, so the
    mock clock may jump many intervals meanwhile: the test checks counts, not times)."""
    while sweeper.passes < n:  # noqa: ASYNC110 (the sweeper has no event to wait on)
        await trio.sleep(10)


def check_kept(store: Store) -> None:
    # cutoff = now - 3.5 days: days 7, 8 and 9 (msg_ids 8-10) are kept
    assert [m.msg_id for m in store.channel_page(DM)] == [8, 9, 10]
    assert [e.seq for e in store.inbox("bob", 0, 100)] == [8, 9, 10]
    with store.env.read() as txn:
        assert ReadTx(txn).inbox_oldest("bob") == 8
        assert ReadTx(txn).inbox_oldest("alice") == 8  # then the group message, seq 11
    assert store.inbox_head("bob") == 10
    assert [e.seq for e in store.inbox("alice", 0, 100)] == [8, 9, 10, 11]
    assert store.channel_last_id(DM) == 10  # ids go on from the last one, never reused
    assert [m.body for m in store.channel_page("g:group0001")] == ["now"]
    # a channel's and an inbox's last item stays, however old: ids go on from it
    assert [m.msg_id for m in store.channel_page("dm:dave:erin")] == [2]
    assert [e.seq for e in store.inbox("erin", 0, 10)] == [2] and store.inbox_head("erin") == 2


async def test_the_sweep_purges_history_past_retention_and_refs_past_their_window(
    tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    store = Store(str(tmp_path / "db"), sync=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await ten_days(store)
        sweeper = Sweeper(
            store, interval=300, ref_retention_hours=24, history_retention_days=3.5, now=frozen
        )
        nursery.start_soon(sweeper.run)
        await passes(sweeper, 1)
        check_kept(store)
        # refs: each is older than a day, but the group message's (today's) is kept
        assert [store.sent_ack(u, f"r{i}") for i, u in enumerate("ababababab")] == [None] * 10
        assert store.sent_ack("carol", "today") == {
            "channel": "g:group0001",
            "msg_id": 1,
            "ts": BASE,
            "inbox": 1,
        }
        assert sweeper.purged == {"tokens": 0, "refs": 12, "messages": 8, "inboxes": 16}
        await passes(sweeper, 2)  # a later pass finds nothing more to do
        assert sweeper.purged["messages"] == 8
        nursery.cancel_scope.cancel()
        store.close()


async def test_a_purge_runs_in_chunks_of_at_most_limit_records(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), sync=False)
    cutoff = BASE - int(3.5 * DAY)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await ten_days(store)
        for db, expected in (("messages", 8), ("inboxes", 16)):
            start: bytes | None = b""
            chunks = deleted = 0
            while start is not None:
                start, n = await store.purge_chunk(db, cutoff, start, limit=3)
                assert n <= 3
                chunks, deleted = chunks + 1, deleted + n
            assert deleted == expected and chunks >= expected // 3
        check_kept(store)
        store.close()


async def test_without_retention_history_is_kept_and_refs_are_walked_hourly(
    tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    """Tokens every pass; refs (one lookup per ref) at most every ``REFS_EVERY``: a ref sent
    after a walk outlives its window by at most that much."""
    store = Store(str(tmp_path / "db"), sync=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await ten_days(store)
        sweeper = Sweeper(store, interval=300, ref_retention_hours=24, now=frozen)
        nursery.start_soon(sweeper.run)
        await passes(sweeper, 1)
        assert len(store.channel_page(DM)) == 10 and len(store.inbox("alice", 0, 100)) == 11
        assert sweeper.purged["messages"] == 0 and sweeper.purged["refs"] == 12
        assert sweeper.ref_walks == 1
        first = sweeper.last_refs_walk
        await store.write(
            partial(
                append_message,
                sender="bob",
                ref="late",
                channel=DM,
                members=["alice", "bob"],
                body="two days ago",
                ts=BASE - 2 * DAY,
            )
        )
        while sweeper.ref_walks < 2:  # noqa: ASYNC110 (virtual time)
            await trio.sleep(60)
        assert sweeper.last_refs_walk - first >= REFS_EVERY  # (trio's clock)
        assert store.sent_ack("bob", "late") is None and sweeper.purged["refs"] == 13
        nursery.cancel_scope.cancel()
        store.close()
