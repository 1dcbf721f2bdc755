"""Storage on a real LMDB in a temp dir: codecs, the typed repository, the Store API, group
commit, map growth. Messages are written with the domain's send transaction function
(``append_message``), the one writer of messages the server has."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import storage
from chatd.domain.messaging_tx import Appended, append_message
from storage import Group, Membership, Store, WriteTx, codec, message_bytes

FAST = settings(max_examples=80, deadline=None)
SLOW = settings(max_examples=40, deadline=None)


@asynccontextmanager
async def running(store: Store) -> AsyncIterator[Store]:
    """Run ``store``'s committer until the block ends; then drain it and close the env."""
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            yield store
        finally:
            store.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with running(Store(str(tmp_path / "db"), sync=False)) as s:
        yield s


async def send(
    store: Store, sender: str, ref: str, channel: str, members: list[str], body: str = "hi"
) -> Appended:
    op = partial(
        append_message, sender=sender, ref=ref, channel=channel, members=members, body=body, ts=1000
    )
    return await store.write(op, size=message_bytes(body))


async def record_outcome(
    outcomes: dict[str, object], name: str, fn: Callable[[], Awaitable[object]]
) -> None:
    """``outcomes[name]`` = what ``fn()`` returned, or the StorageError it raised."""
    try:
        outcomes[name] = await fn()
    except storage.StorageError as exc:
        outcomes[name] = exc


def page_ids(store: Store, channel: str, **kwargs: Any) -> list[int]:
    return [m.msg_id for m in store.channel_page(channel, **kwargs)]


# -- codec

NAMES = st.from_regex(r"[a-z0-9_:]{1,40}", fullmatch=True)
# A tiny alphabet so that equal names and names that are prefixes of others come up often.
SHORT_NAMES = st.text(alphabet="ab_:", min_size=1, max_size=3)
KEY_NAMES = NAMES | SHORT_NAMES
NUMBERS = st.integers(0, 2**63) | st.sampled_from([0, 1, 255, 256, 2**32, 2**63 - 1, 2**63])


@FAST
@given(a=KEY_NAMES, x=NUMBERS, b=KEY_NAMES, y=NUMBERS)
def test_int_key_orders_by_name_then_number(a: str, x: int, b: str, y: int) -> None:
    ka, kb = codec.int_key(a, x), codec.int_key(b, y)
    # Names are ASCII, so Python's str order is the byte order of their encodings.
    assert (ka < kb) == ((a, x) < (b, y))
    assert (ka == kb) == ((a, x) == (b, y))
    # A key lies under exactly one prefix: a range scan over one name never sees another's keys.
    assert ka.startswith(codec.prefix(b)) == (a == b)
    assert codec.int_suffix(ka) == x


@FAST
@given(st.lists(st.tuples(KEY_NAMES, NUMBERS), min_size=2, max_size=30, unique=True))
def test_int_keys_of_one_name_sort_together_and_numerically(pairs: list[tuple[str, int]]) -> None:
    by_bytes = sorted(pairs, key=lambda p: codec.int_key(*p))
    assert by_bytes == sorted(pairs)
    names = [name for name, _ in by_bytes]
    runs = [name for i, name in enumerate(names) if i == 0 or names[i - 1] != name]
    assert len(runs) == len(set(names)), "a name's keys are split by another name's"


@FAST
@given(name=KEY_NAMES, suffix=st.text())
def test_str_key_round_trip(name: str, suffix: str) -> None:
    key = codec.str_key(name, suffix)
    assert key.startswith(codec.prefix(name))
    assert codec.str_suffix(key) == suffix


def test_prefix_refuses_nul() -> None:
    with pytest.raises(ValueError):
        codec.prefix("a\x00b")


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@FAST
@given(st.dictionaries(st.text(max_size=10), VALUES, max_size=8))
def test_pack_unpack_round_trip(value: dict[str, Any]) -> None:
    raw = codec.pack(value)
    assert isinstance(raw, bytes)
    back = codec.unpack(raw)
    assert back == value
    # bytes stay bytes and str stays str (bin type), not merged on the way back
    assert codec.pack(back) == raw


# -- accounts and tokens


async def test_create_account_then_conflict(store: Store) -> None:
    assert store.account("alice") is None
    await store.create_account("alice", {"display_name": "Alice", "pw": b"hash"})
    assert store.account("alice") == {"display_name": "Alice", "pw": b"hash"}
    with pytest.raises(storage.Conflict):
        await store.create_account("alice", {"display_name": "Mallory"})
    assert store.account("alice") == {"display_name": "Alice", "pw": b"hash"}


async def test_update_account_merges_changes(store: Store) -> None:
    await store.create_account("alice", {"display_name": "Alice", "last_active": 1})
    record = await store.update_account("alice", {"last_active": 5, "extra": [1, 2]})
    assert record == {"display_name": "Alice", "last_active": 5, "extra": [1, 2]}
    assert store.account("alice") == record


async def test_update_missing_account_fails_and_creates_nothing(store: Store) -> None:
    with pytest.raises(KeyError):
        await store.update_account("ghost", {"last_active": 5})
    assert store.account("ghost") is None


async def test_tokens_put_get_delete(store: Store) -> None:
    one, two = b"\x01" * 32, b"\x02" * 32
    await store.put_token(one, "alice", 111)
    await store.put_token(two, "bob", 222)
    assert store.token(one) == {"user": "alice", "exp": 111}
    assert store.token(two) == {"user": "bob", "exp": 222}
    assert await store.delete_token(one) is True
    assert store.token(one) is None
    assert await store.delete_token(one) is False
    assert store.token(two) == {"user": "bob", "exp": 222}


# -- friends


async def test_friend_records_put_get_delete(store: Store) -> None:
    await store.write(lambda tx: tx.friend_put("alice", "bob", "requested"))
    await store.write(lambda tx: tx.friend_put("bob", "alice", "pending"))
    assert store.friend_state("alice", "bob") == "requested"
    assert store.friend_state("bob", "alice") == "pending"
    assert store.friends("alice") == [("bob", "requested")]
    assert await store.write(lambda tx: tx.friend_delete("alice", "bob")) is True
    assert await store.write(lambda tx: tx.friend_delete("alice", "bob")) is False
    assert store.friend_state("alice", "bob") is None and store.friends("alice") == []
    assert store.friends("bob") == [("alice", "pending")]


async def test_friend_lists_are_isolated_by_prefix(store: Store) -> None:
    def put(tx: WriteTx) -> None:
        for user, other, state, theirs in [
            ("bob", "carol", "requested", "pending"),
            ("bobby", "dave", "requested", "pending"),
            ("bo", "erin", "friends", "friends"),
        ]:
            tx.friend_put(user, other, state)
            tx.friend_put(other, user, theirs)

    await store.write(put)
    assert store.friends("bob") == [("carol", "requested")]
    assert store.friends("bobby") == [("dave", "requested")]
    assert store.friends("bo") == [("erin", "friends")]
    assert store.friends("b") == []
    assert store.friend_state("bob", "dave") is None


# -- groups, memberships, channels' last records


async def test_group_records_round_trip(store: Store) -> None:
    club = Group("club", "alice", ("alice", "bob"), 123)
    await store.write(lambda tx: tx.group_put("g:club", club))
    assert store.group("g:club") == club
    assert store.group("g:clu") is None and store.group("g:club2") is None
    assert await store.write(lambda tx: tx.group_delete("g:club")) is True
    assert store.group("g:club") is None


async def test_memberships_list_channels_by_last_message(store: Store) -> None:
    def put(tx: WriteTx) -> None:
        for channel, read, last_ts in [("g:a", 1, 30), ("g:b", 0, 10), ("dm:alice:bob", 2, 20)]:
            tx.membership_put("alice", channel, Membership(read=read))
            tx.channel_last_put(channel, 5, last_ts)
        tx.membership_put("alice2", "g:z", Membership(read=9))
        tx.membership_put("alic", "g:y", Membership(read=9))

    await store.write(put)
    rows = [
        (c.channel, c.read_msg_id, c.last_msg_id, c.last_ts)
        for c in store.channels("alice", limit=10)
    ]
    assert rows == [("g:a", 1, 5, 30), ("dm:alice:bob", 2, 5, 20), ("g:b", 0, 5, 10)]
    assert [c.channel for c in store.channels("alice", limit=1, after=(30, "g:a"))] == [
        "dm:alice:bob"
    ]

    def read(tx: WriteTx) -> tuple[Membership | None, list[tuple[str, Membership]], bool]:
        return (
            tx.membership_get("alice", "g:a"),
            list(tx.memberships("alice")),
            tx.membership_delete("alice", "g:b"),
        )

    one, listed, deleted = await store.write(read)
    assert one == Membership(read=1) and deleted is True
    assert [c for c, _ in listed] == ["dm:alice:bob", "g:a", "g:b"]  # by channel id
    assert [c.channel for c in store.channels("alice", limit=10)] == ["g:a", "dm:alice:bob"]


# -- the outbox


async def test_outbox_append_pending_delete(store: Store) -> None:
    def append(tx: WriteTx) -> list[int]:
        seqs = [tx.outbox_append("push", b"p%d" % i) for i in range(5)]
        tx.outbox_append("pus", b"other topic")
        tx.outbox_append("push2", b"other topic")
        return seqs

    assert await store.write(append) == [1, 2, 3, 4, 5]
    assert store.outbox_pending("push", 3) == [(1, b"p0"), (2, b"p1"), (3, b"p2")]
    assert store.outbox_pending("push", 100) == [(i + 1, b"p%d" % i) for i in range(5)]
    assert store.outbox_pending("push", 0) == []
    assert store.outbox_pending("pu", 100) == []
    assert store.outbox_pending("pus", 100) == [(1, b"other topic")]
    assert await store.outbox_delete("push", [1, 3, 9]) == 2
    assert [seq for seq, _ in store.outbox_pending("push", 100)] == [2, 4, 5]
    assert await store.outbox_delete("push", [2, 4, 5]) == 3
    assert store.outbox_pending("push", 100) == []
    # Seqs are never reused, even once every record of the topic is gone.
    assert await store.write(lambda tx: tx.outbox_append("push", b"later")) == 6
    assert store.outbox_pending("push", 100) == [(6, b"later")]


async def test_outbox_records_of_a_failed_op_are_not_stored(store: Store) -> None:
    def append_then_fail(tx: WriteTx) -> None:
        tx.outbox_append("push", b"lost")
        raise storage.Conflict("changed my mind")

    with pytest.raises(storage.Conflict):
        await store.write(append_then_fail)
    assert store.outbox_pending("push", 10) == []
    assert await store.write(lambda tx: tx.outbox_append("push", b"kept")) == 1


async def test_stats_count_batches_ops_and_map_use(store: Store) -> None:
    before = store.stats()
    assert before["map_size"] >= before["map_used"] > 0 and before["queued_bytes"] == 0
    await store.put_token(b"t" * 32, "alice", 1)
    after = store.stats()
    assert after["batches"] == before["batches"] + 1 and after["ops"] == before["ops"] + 1


# -- messages and inboxes


async def test_msg_ids_per_channel_and_inbox_seqs_per_user(store: Store) -> None:
    ab, ac = "dm:alice:bob", "dm:alice:carol"
    first = await send(store, "alice", "r1", ab, ["alice", "bob"], "one")
    assert first.duplicate is False
    assert first.ack == {"channel": ab, "msg_id": 1, "ts": 1000, "inbox": 1}
    assert first.inbox == {"alice": 1, "bob": 1}
    assert (first.message.sender, first.message.body, first.message.msg_id) == ("alice", "one", 1)

    second = await send(store, "bob", "r1", ab, ["alice", "bob"], "two")  # refs are per sender
    assert second.ack["msg_id"] == 2 and second.inbox == {"alice": 2, "bob": 2}
    assert second.ack["inbox"] == 2

    other = await send(store, "alice", "r2", ac, ["alice", "carol"], "three")
    assert other.ack["msg_id"] == 1  # a new channel starts at 1
    assert other.inbox == {"alice": 3, "carol": 1}

    third = await send(store, "alice", "r3", ab, ["alice", "bob"], "four")
    assert third.ack["msg_id"] == 3 and third.inbox == {"alice": 4, "bob": 3}

    assert store.channel_last_id(ab) == 3 and store.channel_last_id(ac) == 1
    assert store.channel_last_id("dm:nobody:here") == 0
    assert (store.inbox_head("alice"), store.inbox_head("bob"), store.inbox_head("carol")) == (
        4,
        3,
        1,
    )
    inbox = store.inbox("alice", 0, 100)
    assert [e.seq for e in inbox] == [1, 2, 3, 4]
    assert [(e.message.channel, e.message.msg_id, e.message.body) for e in inbox] == [
        (ab, 1, "one"),
        (ab, 2, "two"),
        (ac, 1, "three"),
        (ab, 3, "four"),
    ]
    assert [e.message.sender for e in inbox] == ["alice", "bob", "alice", "alice"]


async def test_same_ref_returns_the_same_ack_and_stores_nothing(store: Store) -> None:
    ab = "dm:alice:bob"
    first = await send(store, "alice", "ref-1", ab, ["alice", "bob"], "hello")
    again = await send(store, "alice", "ref-1", ab, ["alice", "bob"], "hello")
    assert again.duplicate is True
    assert again.ack == first.ack
    assert again.message == first.message
    assert again.inbox == {}
    # A re-send with other content (or to another channel) still replays the first ack.
    moved = await send(store, "alice", "ref-1", "dm:alice:carol", ["alice", "carol"], "other")
    assert moved.duplicate is True and moved.ack == first.ack and moved.message.body == "hello"

    assert store.channel_last_id(ab) == 1
    assert store.channel_last_id("dm:alice:carol") == 0
    assert (store.inbox_head("alice"), store.inbox_head("bob"), store.inbox_head("carol")) == (
        1,
        1,
        0,
    )


async def test_same_ref_twice_in_one_batch_stores_one_message(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), sync=False)
    results: list[Appended] = []

    async def one() -> None:
        results.append(await send(store, "alice", "same", "dm:alice:bob", ["alice", "bob"]))

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as callers:
            callers.start_soon(one)
            callers.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()  # both queued before the writer starts
            await outer.start(store.run)
        assert store.committer.batches == 1
        assert sorted(r.duplicate for r in results) == [False, True]
        assert results[0].ack == results[1].ack
        assert store.channel_last_id("dm:alice:bob") == 1
        assert store.inbox_head("bob") == 1
        store.close()


async def test_channel_page(store: Store) -> None:
    ch = "dm:alice:bob"
    for i in range(1, 11):
        await send(store, "alice", f"r{i}", ch, ["alice", "bob"], f"m{i}")
    await send(store, "alice", "other", "dm:alice:bobby", ["alice", "bobby"])

    assert page_ids(store, ch) == list(range(1, 11))  # default limit 50: the whole channel
    assert page_ids(store, ch, limit=3) == [8, 9, 10]  # the newest page, ascending
    assert page_ids(store, ch, before=5, limit=3) == [2, 3, 4]
    assert page_ids(store, ch, before=3, limit=10) == [1, 2]
    assert page_ids(store, ch, before=1) == []
    assert page_ids(store, ch, before=11, limit=2) == [9, 10]
    assert page_ids(store, ch, after=5, limit=3) == [6, 7, 8]
    assert page_ids(store, ch, after=0, limit=2) == [1, 2]
    assert page_ids(store, ch, after=8) == [9, 10]
    assert page_ids(store, ch, after=10) == []
    assert page_ids(store, ch, after=2, before=5) == [3, 4]
    assert page_ids(store, ch, after=2, before=9, limit=2) == [3, 4]
    assert page_ids(store, ch, limit=0) == []

    page = store.channel_page(ch, after=3, limit=1)
    assert [(m.channel, m.msg_id, m.sender, m.body, m.ts) for m in page] == [
        (ch, 4, "alice", "m4", 1000)
    ]
    assert page_ids(store, "dm:alice:bo") == []
    assert page_ids(store, "dm:alice:bobby") == [1]


async def test_inbox_after_and_limit(store: Store) -> None:
    for i in range(1, 8):
        await send(store, "alice", f"r{i}", "dm:alice:bob", ["alice", "bob"], f"m{i}")
    await send(store, "bobby", "x", "dm:bobby:carol", ["bobby", "carol"])
    assert [e.seq for e in store.inbox("bob", 0, 3)] == [1, 2, 3]
    assert [e.seq for e in store.inbox("bob", 3, 3)] == [4, 5, 6]
    assert [e.seq for e in store.inbox("bob", 6, 3)] == [7]
    assert store.inbox("bob", 7, 3) == []
    assert store.inbox("bob", 2, 0) == []
    assert [e.message.body for e in store.inbox("bob", 4, 100)] == ["m5", "m6", "m7"]
    assert [e.message.channel for e in store.inbox("bobby", 0, 100)] == ["dm:bobby:carol"]
    assert store.inbox("bo", 0, 100) == [] and store.inbox_head("bo") == 0


@pytest.mark.parametrize("big", [2**63, 2**64 - 1, 2**64, 10**30])
async def test_reads_past_the_largest_id_do_not_crash(store: Store, big: int) -> None:
    """History and sync cursors come from clients (any non-negative int passes the frame and
    HTTP checks); a cursor beyond every stored id reads as "past the end", not OverflowError."""
    for i in range(3):
        await send(store, "alice", f"r{i}", "dm:alice:bob", ["alice", "bob"])
    assert page_ids(store, "dm:alice:bob", before=big) == [1, 2, 3]
    assert page_ids(store, "dm:alice:bob", after=big) == []
    assert store.inbox("bob", big, 10) == []


SEND_NAMES = st.text(alphabet="ab:_1", min_size=1, max_size=4)


@SLOW
@given(st.lists(st.tuples(SEND_NAMES, SEND_NAMES, SEND_NAMES), min_size=1, max_size=20))
def test_channels_and_inboxes_are_isolated_by_prefix(sends: list[tuple[str, str, str]]) -> None:
    """Names that are prefixes of each other ("a", "a:", "a:b") never see each other's rows."""
    channels: dict[str, list[str]] = {}  # channel -> bodies in msg_id order
    inboxes: dict[str, list[tuple[str, int]]] = {}  # user -> (channel, msg_id) in seq order

    async def main(path: str) -> None:
        async with running(Store(path, map_size=1 << 22, sync=False)) as store:
            for i, (channel, sender, other) in enumerate(sends):
                members = sorted({sender, other})
                body = f"m{i}"
                appended = await send(store, sender, f"r{i}", channel, members, body)
                channels.setdefault(channel, []).append(body)
                msg_id = len(channels[channel])
                assert appended.ack["msg_id"] == msg_id
                for user in members:
                    inboxes.setdefault(user, []).append((channel, msg_id))
                assert appended.inbox == {u: len(inboxes[u]) for u in members}

            used = set(channels) | set(inboxes)
            probes = used | {n + s for n in used for s in ("a", ":", "_")} | {n[:-1] for n in used}
            for name in probes - {""}:
                want = channels.get(name, [])
                assert store.channel_last_id(name) == len(want)
                assert [m.body for m in store.channel_page(name, limit=1000)] == want
                assert [m.body for m in store.channel_page(name, after=0, limit=1000)] == want
                assert {m.channel for m in store.channel_page(name)} <= {name}
                got = [(e.message.channel, e.message.msg_id) for e in store.inbox(name, 0, 1000)]
                assert got == inboxes.get(name, [])
                assert store.inbox_head(name) == len(inboxes.get(name, []))

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, str(Path(tmp) / "db"))


# -- group commit


async def test_concurrent_appends_are_batched_without_gaps(store: Store) -> None:
    results: list[Appended] = []

    async def one(i: int) -> None:
        results.append(await send(store, "alice", f"r{i}", "dm:alice:bob", ["alice", "bob"]))

    batches_before = store.committer.batches
    async with trio.open_nursery() as nursery:
        for i in range(300):
            nursery.start_soon(one, i)
    assert len(results) == 300
    assert sorted(r.ack["msg_id"] for r in results) == list(range(1, 301))
    assert sorted(r.inbox["bob"] for r in results) == list(range(1, 301))
    assert sorted(r.inbox["alice"] for r in results) == list(range(1, 301))
    assert all(not r.duplicate for r in results)
    assert page_ids(store, "dm:alice:bob", after=0, limit=1000) == list(range(1, 301))
    batches = store.committer.batches - batches_before
    assert 1 <= batches < 300


async def test_failing_op_fails_alone_within_its_batch(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    async with running(Store(path, sync=False)) as first:
        await first.create_account("taken", {"n": 1})

    store = Store(path, sync=False)
    outcomes: dict[str, object] = {}
    attempt = partial(record_outcome, outcomes)

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as callers:
            callers.start_soon(attempt, "carol", lambda: store.create_account("carol", {"n": 2}))
            callers.start_soon(attempt, "taken", lambda: store.create_account("taken", {"n": 3}))
            callers.start_soon(
                attempt, "send", lambda: send(store, "alice", "r", "dm:alice:bob", ["alice", "bob"])
            )
            callers.start_soon(attempt, "token", lambda: store.put_token(b"t" * 32, "carol", 9))
            await trio.testing.wait_all_tasks_blocked()  # all four queued: they form one batch
            await outer.start(store.run)
        assert (store.committer.batches, store.committer.ops) == (1, 4)
        assert isinstance(outcomes["taken"], storage.Conflict)
        assert outcomes["carol"] is None and outcomes["token"] is None
        sent = outcomes["send"]
        assert isinstance(sent, Appended) and sent.ack["msg_id"] == 1
        assert store.account("taken") == {"n": 1}
        assert store.account("carol") == {"n": 2}
        assert store.token(b"t" * 32) == {"user": "carol", "exp": 9}
        assert store.channel_last_id("dm:alice:bob") == 1
        store.close()


async def test_caller_cancelled_after_queueing_still_commits(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), sync=False)
    hooked: list[int] = []
    scope = trio.CancelScope()

    async def caller() -> None:
        with scope:
            op = partial(
                append_message,
                sender="alice",
                ref="r",
                channel="dm:alice:bob",
                members=["alice", "bob"],
                body="x",
                ts=1,
            )
            await store.write(op, lambda a: hooked.append(a.ack["msg_id"]))

    async with trio.open_nursery() as callers:
        callers.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()  # queued, waiting for a committer
        scope.cancel()
    assert scope.cancelled_caught
    assert hooked == []
    async with running(store):
        await store.put_token(b"x" * 32, "alice", 1)  # a later write: the queue has drained
        assert store.channel_last_id("dm:alice:bob") == 1
        assert hooked == [1]


async def test_write_after_close_is_storage_unavailable(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), sync=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.create_account("alice", {})
        store.close()
        with pytest.raises(storage.StorageUnavailable):
            await store.create_account("bob", {})


async def test_submit_message_callbacks_run_in_commit_order(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), sync=False, max_batch=7)
    seen: list[tuple[str, int, int, bool]] = []  # (channel, msg_id, alice's seq, duplicate)
    bodies: list[str] = []
    errors: list[BaseException | None] = []
    done = trio.Event()
    total = 60

    def on_done(result: Appended | None, error: BaseException | None) -> None:
        if result is None:
            errors.append(error)
        else:
            ch = result.message.channel
            seen.append((ch, result.message.msg_id, result.ack["inbox"], result.duplicate))
            bodies.append(result.message.body)
        if len(seen) + len(errors) == total:
            done.set()

    async with running(store):
        for i in range(total):
            channel = "dm:alice:bob" if i % 3 else "dm:alice:carol"
            ref = "r0" if i == total - 1 else f"r{i}"  # the last one repeats the first ref
            other = channel.rsplit(":", 1)[1]
            op = partial(
                append_message,
                sender="alice",
                ref=ref,
                channel=channel,
                members=["alice", other],
                body=str(i),
                ts=i,
            )
            store.submit(op, on_done, size=message_bytes(str(i)))
        await done.wait()
        assert errors == []
        assert store.committer.batches >= total // 7
        # Callbacks in submission order, which is commit order: msg_ids ascend per channel
        # and alice's inbox seqs ascend overall.
        assert bodies == [str(i) for i in range(total - 1)] + ["0"]
        fresh = seen[:-1]
        assert [s[2] for s in fresh] == list(range(1, total))
        for channel in ("dm:alice:bob", "dm:alice:carol"):
            ids = [s[1] for s in fresh if s[0] == channel]
            assert ids == list(range(1, len(ids) + 1))
        assert seen[-1] == ("dm:alice:carol", 1, 1, True)


# -- map growth, storage full, reopen


async def test_map_grows_automatically_and_survives_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    body = "x" * 20_000
    count = 150  # about 3 MB of bodies, into a 64 KiB map
    store = Store(path, map_size=1 << 16, sync=False)
    async with running(store):
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(
                    send, store, "alice", f"r{i}", "dm:alice:bob", ["alice", "bob"], body + str(i)
                )
        await store.create_account("alice", {"n": 1})
        assert store.env.env.info()["map_size"] >= 1 << 22
        page = store.channel_page("dm:alice:bob", after=0, limit=1000)
        assert [m.msg_id for m in page] == list(range(1, count + 1))
        assert sorted(m.body for m in page) == sorted(body + str(i) for i in range(count))

    reopened = Store(path, map_size=1 << 16, sync=False)
    async with running(reopened):
        page = reopened.channel_page("dm:alice:bob", after=0, limit=1000)
        assert [m.msg_id for m in page] == list(range(1, count + 1))
        assert all(m.body.startswith(body) for m in page)
        assert reopened.account("alice") == {"n": 1}
        assert reopened.inbox_head("bob") == count
        nxt = await send(reopened, "bob", "again", "dm:alice:bob", ["alice", "bob"])
        assert nxt.ack["msg_id"] == count + 1 and nxt.inbox == {
            "alice": count + 1,
            "bob": count + 1,
        }
        dup = await send(reopened, "alice", "r0", "dm:alice:bob", ["alice", "bob"])
        assert dup.duplicate is True  # refs survive the reopen too


async def test_storage_full_is_unavailable_and_keeps_committed_data(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    body = "y" * 4_000
    store = Store(path, map_size=1 << 16, max_map_size=1 << 18, sync=False)
    committed = 0
    async with running(store):
        await store.create_account("alice", {"n": 1})
        with pytest.raises(storage.StorageUnavailable):
            for i in range(1000):
                await send(store, "alice", f"r{i}", "dm:alice:bob", ["alice", "bob"], body)
                committed += 1
        assert committed > 0
        assert store.env.env.info()["map_size"] == 1 << 18
        # Reads still work and see everything committed before the failure.
        assert store.channel_last_id("dm:alice:bob") == committed
        assert page_ids(store, "dm:alice:bob", after=0, limit=1000) == list(range(1, committed + 1))
        assert [e.seq for e in store.inbox("bob", 0, 1000)] == list(range(1, committed + 1))
        assert store.account("alice") == {"n": 1}
        # The committer is still alive: the next big write fails the same way, no hang or crash.
        with pytest.raises(storage.StorageUnavailable):
            await send(store, "alice", "more", "dm:alice:bob", ["alice", "bob"], body * 4)
        assert store.channel_last_id("dm:alice:bob") == committed

    reopened = Store(path, map_size=1 << 16, max_map_size=1 << 18, sync=False)
    async with running(reopened):
        assert reopened.channel_last_id("dm:alice:bob") == committed
        assert all(m.body == body for m in reopened.channel_page("dm:alice:bob", limit=1000))
        assert reopened.account("alice") == {"n": 1}


async def test_ids_claimed_by_a_failed_op_are_given_again(tmp_path: Path) -> None:
    """An op that claims msg_ids and inbox seqs, then fails, leaves no gap: its claims are
    undone with its nested transaction, within the same batch and after it."""
    store = Store(str(tmp_path / "db"), sync=False)

    def claim_then_fail(tx: WriteTx) -> None:
        assert tx.next_msg_id("dm:alice:bob") == 1
        assert tx.inbox_append("bob", "dm:alice:bob", 1) == 1
        raise storage.Conflict("changed my mind")

    outcomes: dict[str, object] = {}
    attempt = partial(record_outcome, outcomes)

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as callers:
            callers.start_soon(attempt, "fail", lambda: store.write(claim_then_fail))
            await trio.testing.wait_all_tasks_blocked()
            callers.start_soon(
                attempt,
                "send",
                lambda: send(store, "alice", "r1", "dm:alice:bob", ["alice", "bob"]),
            )
            await trio.testing.wait_all_tasks_blocked()  # both queued: one batch
            await outer.start(store.run)
        assert store.committer.batches == 1
        failed, sent = outcomes["fail"], outcomes["send"]
        assert isinstance(failed, storage.Conflict)
        assert isinstance(sent, Appended)
        assert sent.ack["msg_id"] == 1 and sent.inbox == {"alice": 1, "bob": 1}
        again = await send(store, "alice", "r2", "dm:alice:bob", ["alice", "bob"])
        assert again.ack["msg_id"] == 2 and again.inbox == {"alice": 2, "bob": 2}
        store.close()
