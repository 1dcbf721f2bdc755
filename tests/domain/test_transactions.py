"""The domain's transaction functions (units of work) against a real LMDB in a temp dir.

Each rule that moved out of storage is checked here through ``Store.write``, the way the
services run them: DM auto-join, monotonic read marks, the member cap, owner succession, the
friend state machine, and the outbox records of a send (stored with the message, never for a
duplicate, never for a send that fails).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from chatd.domain import friends_tx, groups_tx
from chatd.domain.errors import BadRequest, Conflict, Forbidden, NotFound
from chatd.domain.memberships_tx import mark_read
from chatd.domain.messaging_tx import Appended, append_message
from storage import Group, Membership, Store, WriteTx, message_bytes
from tests.domain.fakes import open_store

DM = "dm:alice:bob"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path / "db", sync=False) as store:
        yield store


@dataclass
class Hook:
    """An outbox hook recording who got what; ``fail`` makes it raise inside the commit."""

    topic: str
    fail: bool = False

    def records(
        self, channel: str, msg_id: int, sender: str, inbox: Mapping[str, int]
    ) -> Sequence[bytes]:
        if self.fail:
            raise RuntimeError("hook failed")
        return [
            f"{channel}/{msg_id}/{sender}->{user}:{seq}".encode() for user, seq in inbox.items()
        ]


async def send(
    store: Store,
    sender: str,
    ref: str,
    channel: str = DM,
    members: list[str] | None = None,
    hooks: Sequence[Hook] = (),
) -> Appended:
    if members is None and channel.startswith("dm:"):
        members = channel.split(":")[1:]
    op = partial(
        append_message,
        sender=sender,
        ref=ref,
        channel=channel,
        members=members,
        body=f"body of {ref}",
        ts=1000,
        hooks=hooks,
    )
    return await store.write(op, size=message_bytes(op.keywords["body"]))


def membership(store: Store, user: str, channel: str) -> Membership | None:
    with store.env.read() as txn:
        return WriteTx(txn).membership_get(user, channel)


async def new_group(store: Store, members: list[str], channel: str = "g:club0001") -> Group:
    op = partial(
        groups_tx.create_group,
        channel=channel,
        name="club",
        owner=members[0],
        members=members,
        created_at=1,
    )
    return await store.write(op)


# -- sends


async def test_first_dm_message_makes_both_users_members(store: Store) -> None:
    assert store.channels("bob", limit=10) == []
    first = await send(store, "alice", "r1")
    assert first.inbox == {"alice": 1, "bob": 1} and not first.duplicate
    # Both joined at the channel's end before the message; the sender's mark moved onto it.
    assert membership(store, "bob", DM) == Membership(read=0)
    assert membership(store, "alice", DM) == Membership(read=1)
    [row] = store.channels("bob", limit=10)
    assert (row.channel, row.read_msg_id, row.last_msg_id, row.last_ts) == (DM, 0, 1, 1000)
    await send(store, "bob", "r2")
    assert membership(store, "bob", DM) == Membership(read=2)
    assert membership(store, "alice", DM) == Membership(read=1)  # not joined again, not moved
    assert [r.last_msg_id for r in store.channels("alice", limit=10)] == [2]


async def test_group_send_reads_members_in_the_transaction(store: Store) -> None:
    await new_group(store, ["alice", "bob", "carol"])
    sent = await send(store, "bob", "r1", "g:club0001")
    assert sent.inbox == {"alice": 1, "bob": 1, "carol": 1}
    assert membership(store, "bob", "g:club0001") == Membership(read=1)
    assert membership(store, "carol", "g:club0001") == Membership(read=0)
    with pytest.raises(Forbidden, match="dave is not a member of g:club0001"):
        await send(store, "dave", "r1", "g:club0001")
    with pytest.raises(NotFound, match="no group"):
        await send(store, "alice", "r2", "g:nothere1")
    # Refused sends store nothing: no message, no inbox entry, no ref.
    assert store.channel_last_id("g:club0001") == 1
    assert store.inbox_head("dave") == 0 and store.sent_ack("dave", "r1") is None
    assert store.channel_last_id("g:nothere1") == 0 and store.sent_ack("alice", "r2") is None


# -- read marks


async def test_read_marks_only_move_forward(store: Store) -> None:
    for i in range(7):
        await send(store, "alice", f"r{i}")

    async def mark(msg_id: int) -> bool:
        return await store.write(lambda tx: mark_read(tx, "bob", DM, msg_id))

    assert await mark(5) is True and membership(store, "bob", DM) == Membership(read=5)
    assert await mark(3) is False and membership(store, "bob", DM) == Membership(read=5)
    assert await mark(5) is False and membership(store, "bob", DM) == Membership(read=5)
    assert await mark(7) is True and membership(store, "bob", DM) == Membership(read=7)
    assert [r.read_msg_id for r in store.channels("bob", limit=10)] == [7]


# -- groups


async def test_member_cap_refuses_the_member_past_it(store: Store) -> None:
    await new_group(store, ["alice", "bob"])
    await send(store, "alice", "r1", "g:club0001")
    add = partial(groups_tx.add_member, channel="g:club0001", cap=3)
    group = await store.write(partial(add, user_id="carol"))
    assert group.members == ("alice", "bob", "carol")
    assert membership(store, "carol", "g:club0001") == Membership(read=1)  # no backlog
    with pytest.raises(BadRequest, match=r"group is full \(3 members\)"):
        await store.write(partial(add, user_id="dave"))
    assert store.group("g:club0001") == group
    assert membership(store, "dave", "g:club0001") is None
    # An existing member is no addition: no error at the cap, nothing changes.
    assert await store.write(partial(add, user_id="bob")) == group
    with pytest.raises(NotFound):
        await store.write(partial(groups_tx.add_member, channel="g:nothere1", user_id="x", cap=3))


async def test_owner_leaving_hands_the_group_to_the_longest_standing_member(store: Store) -> None:
    await new_group(store, ["alice", "bob", "carol"])
    remove = partial(groups_tx.remove_member, channel="g:club0001")
    group = await store.write(partial(remove, user_id="alice"))
    assert (group.owner, group.members) == ("bob", ("bob", "carol"))
    assert store.group("g:club0001") == group
    assert membership(store, "alice", "g:club0001") is None
    assert await store.write(partial(remove, user_id="alice")) == group  # not a member: no-op
    group = await store.write(partial(remove, user_id="carol"))  # not the owner: owner stays
    assert (group.owner, group.members) == ("bob", ("bob",))
    group = await store.write(partial(remove, user_id="bob"))
    assert (group.owner, group.members) == ("", ())
    with pytest.raises(NotFound):
        await store.write(partial(groups_tx.remove_member, channel="g:nothere1", user_id="x"))


async def test_creating_a_group_twice_is_a_conflict(store: Store) -> None:
    first = await new_group(store, ["alice", "bob"])
    with pytest.raises(Conflict):
        await new_group(store, ["carol"])
    assert store.group("g:club0001") == first
    assert membership(store, "carol", "g:club0001") is None


# -- friends


async def test_friend_request_then_accept_then_remove(store: Store) -> None:
    async def request(user: str, other: str) -> str:
        return await store.write(lambda tx: friends_tx.request_friend(tx, user, other))

    assert await request("alice", "bob") == "requested"
    assert store.friend_state("alice", "bob") == "requested"
    assert store.friend_state("bob", "alice") == "pending"
    assert store.friends("alice") == [("bob", "requested")]
    assert store.friends("bob") == [("alice", "pending")]
    # asking again changes nothing
    assert await request("alice", "bob") == "requested"
    assert store.friend_state("bob", "alice") == "pending"

    assert await request("bob", "alice") == "friends"
    assert store.friend_state("alice", "bob") == "friends"
    assert store.friend_state("bob", "alice") == "friends"
    assert await request("alice", "bob") == "friends"

    await store.write(lambda tx: friends_tx.remove_friend(tx, "bob", "alice"))
    assert store.friend_state("alice", "bob") is None
    assert store.friend_state("bob", "alice") is None
    assert store.friends("alice") == []
    assert store.friends("bob") == []


# -- the outbox


async def test_hook_records_are_stored_with_the_message_and_not_for_a_duplicate(
    store: Store,
) -> None:
    hooks = [Hook("push"), Hook("shards")]
    first = await send(store, "alice", "r1", hooks=hooks)
    want = [(1, f"{DM}/1/alice->alice:1".encode()), (2, f"{DM}/1/alice->bob:1".encode())]
    assert store.outbox_pending("push", 10) == want
    assert store.outbox_pending("shards", 10) == want
    again = await send(store, "alice", "r1", hooks=hooks)
    assert again.duplicate and again.ack == first.ack
    assert store.outbox_pending("push", 10) == want  # a resend adds nothing
    await send(store, "bob", "r1", hooks=hooks[:1])
    assert [seq for seq, _ in store.outbox_pending("push", 10)] == [1, 2, 3, 4]
    assert len(store.outbox_pending("shards", 10)) == 2
    await send(store, "alice", "r2")  # no hooks: no records
    assert len(store.outbox_pending("push", 10)) == 4


async def test_a_failing_send_leaves_no_outbox_record(store: Store) -> None:
    await new_group(store, ["alice", "bob"])
    with pytest.raises(RuntimeError, match="hook failed"):
        await send(store, "alice", "r1", hooks=[Hook("push"), Hook("other", fail=True)])
    with pytest.raises(Forbidden):
        await send(store, "carol", "r1", "g:club0001", hooks=[Hook("push")])
    assert store.outbox_pending("push", 10) == []
    assert store.outbox_pending("other", 10) == []
    assert store.channel_last_id(DM) == 0 and store.sent_ack("alice", "r1") is None
    assert store.inbox_head("bob") == 0  # and no auto-join of the DM:
    assert [row.channel for row in store.channels("bob", limit=10)] == ["g:club0001"]
    # The failed send's ids and outbox seqs were given back: the next send takes them.
    sent = await send(store, "alice", "r1", hooks=[Hook("push")])
    assert sent.ack["msg_id"] == 1 and sent.inbox == {"alice": 1, "bob": 1}
    assert [seq for seq, _ in store.outbox_pending("push", 10)] == [1, 2]
