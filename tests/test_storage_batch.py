"""Group-commit batches on a real LMDB: every op of a batch runs in its one transaction. An op
that raises before writing fails alone and the batch goes on; one that raises after writing
makes the batch run again without it, so it alone is rolled back (storage/env.py
``Env.commit_batch``: LMDB with writemap has no nested transactions). Also the fused inbox
append of the send path."""

from __future__ import annotations

import ast
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
    """The failing op comes after ops that wrote, and writes before it raises: the run is
    dropped and the batch runs again without it, storing every other op once, with the seqs
    the failing op had claimed given to the ops after it."""
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
    # The first run stopped at the failure; the second ran everything but it.
    assert calls == {"first": 2, "account": 2, "fail": 1, "after": 1}

    reopened = Store(str(tmp_path / "db"), sync=False)
    assert reopened.account("carol") == {"n": 2}
    assert reopened.account("mallory") is None
    assert reopened.inbox_head("bob") == 2
    assert reopened.inbox_head("mallory") == 0
    reopened.env.close()


async def test_ops_that_raise_before_writing_cost_no_second_run(tmp_path: Path) -> None:
    """The usual failures (an existing key, a check that says no) fail alone, in the one run;
    a put refused because its key exists writes nothing either."""
    store = Store(str(tmp_path / "db"), sync=False)
    calls: dict[str, int] = {}

    def refuse(tx: WriteTx) -> None:
        if tx.account_get("carol") is None:
            raise LookupError("no carol")

    fns: dict[str, Callable[[WriteTx], object]] = {
        "alice": lambda tx: tx.account_insert("alice", {"n": 1}),
        "again": lambda tx: tx.account_insert("alice", {"n": 9}),  # Conflict, nothing put
        "refuse": refuse,
        "bob": lambda tx: tx.account_insert("bob", {"n": 3}),
    }
    outcomes = await one_batch(store, {name: counted(calls, name, fn) for name, fn in fns.items()})
    assert calls == dict.fromkeys(fns, 1)
    assert isinstance(outcomes.pop("again"), storage.Conflict)
    assert isinstance(outcomes.pop("refuse"), LookupError)
    assert outcomes == {"alice": None, "bob": None}
    reopened = Store(str(tmp_path / "db"), sync=False)
    assert reopened.account("alice") == {"n": 1} and reopened.account("bob") == {"n": 3}
    reopened.env.close()


async def test_a_claimed_id_counts_as_a_write(tmp_path: Path) -> None:
    """An op that claims a msg_id and then raises (nothing put yet) is left out with a run
    of its own: the id it claimed goes to the next message, so a channel's ids stay
    gap-free."""
    store = Store(str(tmp_path / "db"), sync=False)
    calls: dict[str, int] = {}

    def claim_then_fail(tx: WriteTx) -> None:
        tx.next_msg_id("g:x")
        raise ValueError("no body after all")

    fns: dict[str, Callable[[WriteTx], object]] = {
        "one": lambda tx: tx.next_msg_id("g:x"),
        "fail": claim_then_fail,
        "two": lambda tx: tx.next_msg_id("g:x"),
        "fail2": claim_then_fail,
        "three": lambda tx: tx.next_msg_id("g:x"),
    }
    outcomes = await one_batch(store, {name: counted(calls, name, fn) for name, fn in fns.items()})
    assert isinstance(outcomes.pop("fail"), ValueError)
    assert isinstance(outcomes.pop("fail2"), ValueError)
    assert outcomes == {"one": 1, "two": 2, "three": 3}
    assert calls == {"one": 3, "fail": 1, "two": 2, "fail2": 1, "three": 1}


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


ROOT = Path(__file__).resolve().parent.parent
CURSOR_WRITES = {"delete", "put", "replace", "pop", "putmulti"}


def _write_rule_breaks(source: str, name: str) -> list[str]:
    """Writes a batch would not see as writes (``Txn.dirty`` unset): ``.raw`` used directly,
    or a delete or put through a cursor taken to read (``txn.cursor``, ``find_message``
    without ``write=True``)."""
    tree = ast.parse(source, name)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "raw":
            found.append(f"{name}:{node.lineno} .raw")
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        readers = set()
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                call = node.value
                called = call.func.attr if isinstance(call.func, ast.Attribute) else None
                called = called or (call.func.id if isinstance(call.func, ast.Name) else None)
                writes = any(k.arg == "write" for k in call.keywords)
                if called == "cursor" or (called == "find_message" and not writes):
                    readers |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in CURSOR_WRITES
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in readers
            ):
                found.append(f"{name}:{node.lineno} {node.func.value.id}.{node.func.attr}")
    return found


def test_every_write_marks_its_transaction() -> None:
    """An op that raises is left out of its batch cheaply only if it wrote nothing; so every
    write goes through a method that sets ``Txn.dirty`` (storage/env.py). Only the
    environment itself and the offline format upgrade (its own transactions) touch ``.raw``."""
    allowed = {ROOT / "storage" / "env.py", ROOT / "storage" / "upgrade.py"}
    files = sorted((ROOT / "storage").glob("*.py")) + sorted((ROOT / "chatd").rglob("*.py"))
    assert len(files) > 50
    breaks = [
        b for f in files if f not in allowed for b in _write_rule_breaks(f.read_text(), f.name)
    ]
    assert breaks == []
    # The rule sees what it looks for: cursor deletes and raw puts, written the old way.
    old = (ROOT / "storage" / "messages.py").read_text()
    old = old.replace("write_cursor(", "cursor(").replace("raw_writes()", "raw")
    assert len(_write_rule_breaks(old, "messages.py")) == 3
