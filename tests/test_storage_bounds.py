"""Bounded storage paths: the commit queue's byte cap and the paginated channel list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from storage import Store
from storage.messages import Appended

BIG = "x" * 100_000  # a maximal message body


def submit(store: Store, ref: str, done: list[Any], body: str = BIG) -> None:
    def on_done(appended: Appended | None, error: BaseException | None) -> None:
        done.append(error or appended)

    store.submit_message(
        sender="alice",
        ref=ref,
        channel="dm:alice:bob",
        members=["alice", "bob"],
        body=body,
        ts=1000,
        on_done=on_done,
    )


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
        result.append(
            await store.append_message(
                sender="bob",
                ref="w",
                channel="dm:alice:bob",
                members=["alice", "bob"],
                body=BIG,
                ts=2000,
            )
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        # The writer waits for room: nothing more was queued, nothing committed.
        assert store.committer.queued_bytes == queued and not result
        await nursery.start(store.run)
        await barrier(store)
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
