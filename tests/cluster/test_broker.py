"""The broker against a real redis-server: order, acknowledgement, redelivery, pub/sub, an
outage with a SIGKILLed server and its AOF restart, and the MAXLEN bound."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import coredis
import pytest
import trio
import trio.lowlevel
from coredis.tokens import PureToken

from chatd.cluster.broker import Broker, BrokerDown, stream_key
from tests.cluster.redis import RedisServer

#: A guard against hangs only: nothing here is expected to take more than a fraction of it.
PATIENCE = 10.0


class Inbox:
    """The handlers of one broker: keeps every call, acknowledges what ``ack`` accepts."""

    def __init__(self, ack: Callable[[bytes], bool] = lambda payload: True) -> None:
        self.ack = ack
        self.batches: list[list[tuple[str, bytes]]] = []
        self.live: list[bytes] = []
        self._changed = trio.Event()

    async def on_records(self, records: list[tuple[str, bytes]]) -> Sequence[str]:
        self.batches.append(list(records))
        self._notify()
        return [entry_id for entry_id, payload in records if self.ack(payload)]

    def on_live(self, payload: bytes) -> None:
        self.live.append(payload)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @property
    def payloads(self) -> list[bytes]:
        return [payload for batch in self.batches for _, payload in batch]

    async def wait(self, condition: Callable[[], bool]) -> None:
        with trio.fail_after(PATIENCE):
            while not condition():
                await self._changed.wait()


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll a condition of a broker's state: its own tasks change it, with no event to wait on
    (the interface has none, and the lead's /healthz only reads it)."""
    with trio.fail_after(PATIENCE):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)


@asynccontextmanager
async def running(broker: Broker, inbox: Inbox | None = None) -> AsyncIterator[Inbox]:
    """Run ``broker`` until the block ends."""
    inbox = inbox or Inbox()
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.run, inbox.on_records, inbox.on_live)
        yield inbox
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[coredis.Redis[bytes]]:
    async with coredis.Redis.from_url(url) as client:
        yield client


async def pending_count(url: str, shard: str) -> int:
    async with redis_client(url) as client:
        return (await client.xpending(stream_key(shard), "chatd")).pending


def payloads(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(n)]


async def test_records_arrive_in_order_exactly_as_sent(redis_server: RedisServer) -> None:
    a = Broker(redis_server.url, "a")
    b = Broker(redis_server.url, "b", batch=8)
    sent = payloads("m", 50) + [b"", b"\x00\xff" * 1000]
    async with running(a):
        # Before b ever ran: its group is created at id 0, so these are not missed.
        await a.send([("b", p) for p in sent[:10]])
        async with running(b) as inbox:
            await a.send([("b", p) for p in sent[10:11]])
            await a.send([("b", p) for p in sent[11:]])
            await inbox.wait(lambda: len(inbox.payloads) >= len(sent))
            assert inbox.payloads == sent
            assert all(len(batch) <= 8 for batch in inbox.batches)
            ids = [entry_id for batch in inbox.batches for entry_id, _ in batch]
            assert len(set(ids)) == len(ids)
            await eventually(lambda: b.acked == len(sent))
    assert (a.sent, b.received, b.acked, a.errors, b.errors) == (len(sent), len(sent), 52, 0, 0)
    assert await pending_count(redis_server.url, "b") == 0


async def test_unacked_entries_come_again_and_acked_ones_do_not(redis_server: RedisServer) -> None:
    a = Broker(redis_server.url, "a")
    b1 = Broker(redis_server.url, "b")
    b1.pending_every = 0.2
    refused = {b"p1", b"p3", b"p5"}
    first = Inbox(ack=lambda payload: payload not in refused)
    async with running(a):
        async with running(b1, first):
            await a.send([("b", p) for p in payloads("p", 6)])
            # The refused ones are offered again (pending list re-read), the others never.
            await first.wait(lambda: first.payloads.count(b"p5") >= 3)
            for p in (b"p0", b"p2", b"p4"):
                assert first.payloads.count(p) == 1
            assert first.payloads[:6] == payloads("p", 6)
            assert set(first.payloads[6:]) == refused
            first_ids = {p: entry_id for batch in first.batches for entry_id, p in batch}
        assert await pending_count(redis_server.url, "b") == 3

        # While shard b is away, more records for it; then b restarts as a new Broker.
        await a.send([("b", p) for p in (b"p6", b"p7")])
        b2 = Broker(redis_server.url, "b")
        async with running(b2) as second:
            await second.wait(lambda: len(second.payloads) >= 5)
            # Its pending entries first, with their ids, before anything new.
            assert second.batches[0] == [(first_ids[p], p) for p in (b"p1", b"p3", b"p5")]
            assert second.payloads == [b"p1", b"p3", b"p5", b"p6", b"p7"]
            await eventually(lambda: b2.acked == 5)
    assert await pending_count(redis_server.url, "b") == 0


async def test_live_messages_reach_the_subscribed_shard(redis_server: RedisServer) -> None:
    a = Broker(redis_server.url, "a")
    b = Broker(redis_server.url, "b")
    assert await a.announce("b", b"early") is False  # not running: no connection, no raise
    async with running(a) as a_inbox, running(b) as b_inbox:
        # Pub/sub keeps nothing for a channel nobody listens to yet: announce until b hears.
        with trio.fail_after(PATIENCE):
            while not b_inbox.live:
                assert await a.announce("b", b"typing") is True
                await trio.sleep(0.02)
        assert set(b_inbox.live) == {b"typing"}
        assert a_inbox.live == []
        assert b_inbox.batches == []  # ephemeral: nothing went through the stream


async def test_outage_marks_down_then_recovers_and_delivers(redis_server: RedisServer) -> None:
    a = Broker(redis_server.url, "a", retry=0.05, timeout=2.0)
    b = Broker(redis_server.url, "b", retry=0.05, timeout=2.0)
    b.pending_every = 60.0  # only a reconnection re-reads b's pending list in this test
    seen: set[bytes] = set()

    def ack_r2_second_time(payload: bytes) -> bool:
        first_time = payload not in seen
        seen.add(payload)
        return not (payload == b"r2" and first_time)

    async with running(a) as a_inbox, running(b, Inbox(ack_r2_second_time)) as b_inbox:
        await a.send([("b", p) for p in (b"r0", b"r1", b"r2")])
        # And records for shard c, which is not running: they wait in the stream (and AOF).
        await a.send([("c", b"c0"), ("c", b"c1")])
        await b_inbox.wait(lambda: len(b_inbox.payloads) == 3)
        await eventually(lambda: b.acked == 2)  # r2 stays pending
        assert a.up and b.up
        up_since = b.health()["since"]

        redis_server.kill()
        with trio.fail_after(PATIENCE):  # a hang guard; BrokerDown comes at once (refused)
            with pytest.raises(BrokerDown):
                await a.send([("b", b"lost?")])
        assert a.health()["state"] == "down"
        await eventually(lambda: not b.up)
        assert b.health()["state"] == "down" and b.health()["since"] >= up_since
        assert await a.announce("b", b"typing") is False
        await trio.sleep(0.3)  # a few reconnection attempts, which must not end run()
        errors = b.errors
        assert errors >= 2

        redis_server.restart()
        await eventually(lambda: a.up and b.up)
        assert b.health()["state"] == "up"
        await a.send([("b", b"r3")])
        # r2 was pending when Redis died: the pending list came back with the AOF.
        await b_inbox.wait(lambda: b"r3" in b_inbox.payloads)
        assert b_inbox.payloads == [b"r0", b"r1", b"r2", b"r2", b"r3"]
        await eventually(lambda: b.acked == 4)

        c = Broker(redis_server.url, "c")
        async with running(c) as c_inbox:
            await c_inbox.wait(lambda: len(c_inbox.payloads) == 2)
            assert c_inbox.payloads == [b"c0", b"c1"]
        assert a_inbox.batches == []
    assert await pending_count(redis_server.url, "b") == 0


async def test_a_hung_redis_times_out_instead_of_hanging(redis_server: RedisServer) -> None:
    a = Broker(redis_server.url, "a", timeout=0.5, block_ms=100, retry=0.05)
    b = Broker(redis_server.url, "b", timeout=0.5, block_ms=100, retry=0.05)
    async with running(a), running(b) as inbox:
        await a.send([("b", b"before")])
        await inbox.wait(lambda: inbox.payloads == [b"before"])
        redis_server.pause()  # connections stay open; nothing answers
        try:
            with trio.fail_after(PATIENCE), pytest.raises(BrokerDown):
                await a.send([("b", b"maybe")])  # gives up after its timeout
            assert not a.up
            await eventually(lambda: not b.up)  # its blocked read gave up too
        finally:
            redis_server.resume()
        await eventually(lambda: a.up and b.up)
        await a.send([("b", b"after")])
        # "maybe" may have been stored (the server had it in its socket buffer): at least once.
        await inbox.wait(lambda: b"after" in inbox.payloads)
        assert inbox.payloads in ([b"before", b"after"], [b"before", b"maybe", b"after"])


async def test_a_stalled_loop_does_not_take_redis_for_down(redis_server: RedisServer) -> None:
    """The shard's own loop stalls (CPU starved) for longer than a Redis call may take: the
    replies wait in the socket meanwhile. Nothing is marked down, no connection is dropped,
    and the send that was in flight during the stall succeeds."""
    a = Broker(redis_server.url, "a", timeout=0.5, block_ms=100)
    b = Broker(redis_server.url, "b", timeout=0.5, block_ms=100)
    async with running(a), running(b) as inbox:
        await a.send([("b", b"before")])
        await inbox.wait(lambda: inbox.payloads == [b"before"])
        since = (a.health()["since"], b.health()["since"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send, [("b", b"during")])
            await (
                trio.lowlevel.checkpoint()
            )  # the XADD is written; its reply will wait for the loop
            time.sleep(2.0)  # noqa: ASYNC251 - the stall under test: 4x the broker's timeout
        await inbox.wait(lambda: b"during" in inbox.payloads)
        await a.send([("b", b"after")])
        await inbox.wait(lambda: b"after" in inbox.payloads)
        assert inbox.payloads == [b"before", b"during", b"after"]
        assert (a.up, b.up, a.errors, b.errors) == (True, True, 0, 0)
        assert (a.health()["since"], b.health()["since"]) == since
        assert a.clock.worst_stall >= 1.5


async def test_a_flushed_redis_gets_its_group_back(redis_server: RedisServer) -> None:
    a = Broker(redis_server.url, "a", retry=0.05)
    b = Broker(redis_server.url, "b", retry=0.05)
    async with running(a), running(b) as inbox:
        await a.send([("b", b"one")])
        await inbox.wait(lambda: inbox.payloads == [b"one"])
        async with redis_client(redis_server.url) as client:
            await client.flushall()  # as a restart without persistence would
        # Sent at once, maybe before b noticed: the new group starts at id 0, so not missed.
        await a.send([("b", b"two")])
        await inbox.wait(lambda: len(inbox.payloads) == 2)
        assert inbox.payloads == [b"one", b"two"]
        await eventually(lambda: b.up and b.acked == 2)


async def test_starts_with_redis_down_and_comes_up_later(redis_server: RedisServer) -> None:
    redis_server.kill()
    b = Broker(redis_server.url, "b", retry=0.05, timeout=2.0)
    async with running(b) as inbox:  # started although the first attempt failed
        assert not b.up and b.health()["state"] == "down"
        with pytest.raises(BrokerDown):
            await b.send([("b", b"x")])
        redis_server.start()
        await eventually(lambda: b.up)
        await b.send([("b", b"to myself")])
        await inbox.wait(lambda: inbox.payloads == [b"to myself"])


async def test_maxlen_keeps_the_stream_bounded(redis_server: RedisServer) -> None:
    a = Broker(redis_server.url, "a", maxlen=100)
    async with running(a):
        for start in range(0, 2000, 250):
            await a.send([("t", b"%d" % i) for i in range(start, start + 250)])
    async with redis_client(redis_server.url) as client:
        length = await client.xlen(stream_key("t"))
        newest = await client.xrevrange(stream_key("t"), count=1)
    # "~" trims whole radix-tree nodes (100 entries each by default), never below maxlen.
    assert 100 <= length <= 200
    assert newest[0].field_values[b"r"] == b"1999"
    assert a.sent == 2000


async def test_a_pending_entry_whose_data_was_trimmed_is_dropped(redis_server: RedisServer) -> None:
    b = Broker(redis_server.url, "b")
    b.pending_every = 0.1
    inbox = Inbox(ack=lambda payload: payload != b"old")
    async with running(b, inbox):
        await b.send([("b", b"old")])
        await inbox.wait(lambda: b"old" in inbox.payloads)
        async with redis_client(redis_server.url) as client:
            await client.xtrim(stream_key("b"), PureToken.MAXLEN, 0)
        # The pending entry now reads as (id, nil): acked and counted, not offered forever.
        await eventually(lambda: b.errors == 1 and b.acked == 1)
        offered = len(inbox.payloads)
        await b.send([("b", b"new")])
        await inbox.wait(lambda: b"new" in inbox.payloads)
        assert inbox.payloads[offered:] == [b"new"]
        await eventually(lambda: b.acked == 2)
    assert await pending_count(redis_server.url, "b") == 0


async def test_send_without_run_and_empty_send() -> None:
    b = Broker("redis://127.0.0.1:9/0", "b")
    await b.send([])  # nothing to do: no connection needed
    with pytest.raises(BrokerDown):
        await b.send([("b", b"x")])


def test_health_hides_the_password() -> None:
    broker = Broker("redis://chatd:s3cret@127.0.0.1:6379/0?password=s3cret&db=0", "a")
    health = broker.health()
    assert health["state"] == "down"
    assert health["url"] == "redis://chatd@127.0.0.1:6379/0?db=0"
    assert "s3cret" not in repr(health)
    assert isinstance(health["since"], float)
    assert Broker("redis://:pw@[::1]:6379", "a").health()["url"] == "redis://[::1]:6379"
