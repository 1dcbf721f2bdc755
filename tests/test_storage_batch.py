"""Group-commit batches on a real LMDB: a batch runs flat (no nested transaction per op) and,
if an op raises, runs again with each op nested, so the failing op alone is rolled back
(storage/env.py ``Env.commit_batch``). Also the fused inbox append of the send path."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import trio
import trio.testing

import storage
from storage import Store, WriteTx
from storage.messages import parse_inbox


async def one_batch(store: Store, fns: dict[str, Callable[[WriteTx], object]]) -> dict[str, object]:
    """Queue every write before the committer starts, so they form one batch; each name's
    outcome is what its write returned or the exception it raised."""
    outcomes: dict[str, object] = {}

    async def attempt(name: str, fn: Callable[[WriteTx], object]) -> None:
        try:
            outcomes[name] = await store.write(fn)
        except Exception as exc:
            outcomes[name] = exc

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as callers:
            for name, fn in fns.items():
                callers.start_soon(attempt, name, fn)
                await trio.testing.wait_all_tasks_blocked()  # queued in this order
            await outer.start(store.run)
        assert store.committer.batches == 1
        store.close()
    return outcomes


def counted(
    calls: dict[str, int], name: str, fn: Callable[[WriteTx], object]
) -> Callable[[WriteTx], object]:
    def run(tx: WriteTx) -> object:
        calls[name] = calls.get(name, 0) + 1
        return fn(tx)

    return run


def append(user: str, channel: str, msg_id: int, tx: WriteTx) -> int:
    return tx.inbox_append(user, channel, msg_id)


async def test_a_batch_without_errors_runs_each_op_once(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), sync=False)
    calls: dict[str, int] = {}
    fns = {
        f"w{i}": counted(calls, f"w{i}", partial(append, "bob", "dm:alice:bob", i))
        for i in range(1, 6)
    }
    outcomes = await one_batch(store, fns)
    assert calls == dict.fromkeys(fns, 1)
    assert outcomes == {f"w{i}": i for i in range(1, 6)}  # seqs in queue order
    reopened = Store(str(tmp_path / "db"), sync=False)
    assert reopened.inbox_head("bob") == 5
    reopened.env.close()


async def test_an_op_that_raises_after_writing_is_undone_alone(tmp_path: Path) -> None:
    """The failing op comes after ops that wrote, and writes before it raises: the flat run is
    dropped, the nested run stores every other op once, with the seqs the failing op had
    claimed given to the ops after it."""
    store = Store(str(tmp_path / "db"), sync=False)
    calls: dict[str, int] = {}

    def write_then_fail(tx: WriteTx) -> None:
        tx.account_insert("mallory", {"n": 0})
        tx.inbox_append("bob", "dm:bob:mallory", 7)
        raise storage.Conflict("changed my mind")

    fns = {
        "first": counted(calls, "first", partial(append, "bob", "dm:alice:bob", 1)),
        "account": counted(calls, "account", lambda tx: tx.account_insert("carol", {"n": 2})),
        "fail": counted(calls, "fail", write_then_fail),
        "after": counted(calls, "after", partial(append, "bob", "dm:alice:bob", 2)),
    }
    outcomes = await one_batch(store, fns)
    assert isinstance(outcomes.pop("fail"), storage.Conflict)
    assert outcomes == {"first": 1, "account": None, "after": 2}
    # The flat run stopped at the failure; the nested run ran everything once more.
    assert calls == {"first": 2, "account": 2, "fail": 2, "after": 1}

    reopened = Store(str(tmp_path / "db"), sync=False)
    assert reopened.account("carol") == {"n": 2}
    assert reopened.account("mallory") is None
    assert reopened.inbox_head("bob") == 2
    reopened.env.close()


async def test_a_bad_key_fails_its_op_alone(tmp_path: Path) -> None:
    """A key LMDB refuses (over 511 bytes) is a StorageError for its op only."""
    store = Store(str(tmp_path / "db"), sync=False)
    fns: dict[str, Callable[[WriteTx], object]] = {
        "ok": lambda tx: tx.account_insert("alice", {"n": 1}),
        "bad": lambda tx: tx.account_insert("x" * 600, {"n": 2}),
        "also": lambda tx: tx.account_insert("bob", {"n": 3}),
    }
    outcomes = await one_batch(store, fns)
    assert isinstance(outcomes["bad"], storage.StorageError)
    assert outcomes["ok"] is None and outcomes["also"] is None
    reopened = Store(str(tmp_path / "db"), sync=False)
    assert reopened.account("alice") == {"n": 1} and reopened.account("bob") == {"n": 3}
    reopened.env.close()


async def test_inbox_append_many_is_inbox_append_per_user(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), sync=False)

    def both(tx: WriteTx) -> tuple[dict[str, int], dict[str, int]]:
        tx.inbox_append("bob", "g:x", 1)
        many = tx.inbox_append_many(["alice", "bob", "carol"], "g:x", 2)
        one = {u: tx.inbox_append(u, "g:x", 3) for u in ["alice", "bob", "carol"]}
        return many, one

    outcomes = await one_batch(store, {"both": both})
    assert outcomes["both"] == (
        {"alice": 1, "bob": 2, "carol": 1},
        {"alice": 2, "bob": 3, "carol": 2},
    )
    reopened = Store(str(tmp_path / "db"), sync=False)
    with reopened.env.read() as txn:
        cursor = txn.cursor("inboxes")
        assert cursor.set_key(b"bob")
        items = [parse_inbox(item) for item in cursor.iternext_dup()]
        number = txn.get("chanids", b"g:x")
        assert number is not None
        assert sorted(items) == [(s, int.from_bytes(number, "big"), s) for s in (1, 2, 3)]
        assert storage.ReadTx(txn).inbox_head("carol") == 2
    reopened.env.close()
