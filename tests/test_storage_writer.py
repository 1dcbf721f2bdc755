"""The committer's dedicated writer thread (storage/writer.py): every batch in that one thread,
the thread gone when the committer stops (closed or cancelled), a batch whose commit raises
failing only its own ops, map growth asked of the event loop."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from storage.env import Op
from storage.errors import StorageUnavailable
from storage.store import Store
from storage.writer import WriterThread


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WriterThread.NAME]


class Gate:
    """Holds each batch at the door of the real ``Env.commit_batch`` until opened."""

    def __init__(self, store: Store) -> None:
        self._commit = store.env.commit_batch
        store.env.commit_batch = self._gated  # type: ignore[method-assign]
        self.waiting = threading.Event()
        self.open = threading.Event()

    def _gated(self, batch: Sequence[Op]) -> None:
        self.waiting.set()
        assert self.open.wait(10)
        self._commit(batch)

    async def held(self) -> None:
        assert await trio.to_thread.run_sync(self.waiting.wait, 10)


def number(tx: Any, n: int) -> int:
    return n


def record(done: list[Any], n: int) -> Any:
    def on_done(result: Any, error: BaseException | None) -> None:
        done.append((n, error or result))

    return on_done


async def test_every_batch_runs_in_the_one_writer_thread(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), sync=False, max_batch=16)
    seen: set[tuple[int, str]] = set()
    before = len(writer_threads())

    def op(n: int) -> Any:
        def fn(tx: Any) -> int:
            seen.add((threading.get_ident(), threading.current_thread().name))
            return n

        return fn

    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        assert len(writer_threads()) == before + 1
        async with trio.open_nursery() as writers:
            for n in range(200):
                writers.start_soon(store.write, op(n))
        store.close()
    assert len(seen) == 1
    ((ident, name),) = seen
    assert name == WriterThread.NAME and ident != threading.get_ident()
    assert 1 < store.committer.batches < 200 and store.committer.ops == 200
    assert len(writer_threads()) == before  # run() returned only once its thread had ended


async def test_ops_queued_before_run_commit_and_close_before_run_drains(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), sync=False)
    done: list[Any] = []
    for n in range(5):
        store.submit(partial(number, n=n), record(done, n))
    store.close()
    with pytest.raises(StorageUnavailable):
        store.submit(lambda tx: None, record(done, 99))
    with trio.fail_after(10):
        await store.run()
    assert done == [(n, n) for n in range(5)]
    assert store.committer.batches == 1 and store.committer.queued_bytes == 0


async def test_cancelled_run_ends_the_thread_after_its_batch_and_fails_the_rest(
    tmp_path: Path,
) -> None:
    store = Store(str(tmp_path / "db"), sync=False)
    gate = Gate(store)
    done: list[Any] = []
    before = len(writer_threads())
    scope = trio.CancelScope()

    async def runner(task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await store.committer.run(task_status=task_status)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner)
            store.submit(lambda tx: "in flight", record(done, 0))
            await gate.held()
            for n in range(1, 4):
                store.submit(lambda tx: "queued", record(done, n))
            scope.cancel()
            await trio.sleep(0.05)
            assert len(writer_threads()) == before + 1  # run() waits for the batch in flight
            assert done == []
            gate.open.set()
    store.env.close()
    assert done[0] == (0, "in flight")
    assert [n for n, _ in done[1:]] == [1, 2, 3]
    assert all(isinstance(error, StorageUnavailable) for _, error in done[1:])
    assert len(writer_threads()) == before
    assert store.committer.queued_bytes == 0
    with pytest.raises(StorageUnavailable):
        store.submit(lambda tx: None, record(done, 9))


async def test_a_batch_whose_commit_raises_fails_only_its_ops(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), sync=False)
    real = store.env.commit_batch
    calls = [0]

    def first_one_breaks(batch: Sequence[Op]) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("a bug below the committer")
        real(batch)

    store.env.commit_batch = first_one_breaks  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        with pytest.raises(StorageUnavailable, match="a bug below the committer"):
            await store.put_token(b"t1", "alice", 0)
        await store.put_token(b"t2", "alice", 0)  # the thread lives on
        store.close()
    assert store.committer.batches == 2


async def test_map_growth_runs_on_the_event_loop(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), map_size=1 << 16, sync=False)
    real = store.env.grow
    grew_in: list[int] = []

    def grow() -> None:
        grew_in.append(threading.get_ident())
        real()

    store.env.grow = grow  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for n in range(20):
            await store.put_token(b"t%d" % n + b"x" * 200, "u" * 20_000, 0)
        store.close()
    assert grew_in and set(grew_in) == {threading.get_ident()}


async def test_the_ops_of_one_loop_tick_make_one_batch(tmp_path: Path) -> None:
    """The sleeping thread is woken from the committer's task, after the tasks of the tick
    that queued the first op: many tasks' writes in one tick commit together."""
    store = Store(str(tmp_path / "db"), sync=False)
    done: list[Any] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.put_token(b"first", "alice", 0)
        with trio.fail_after(5):
            while not store.committer._writer._sleeping:  # noqa: ASYNC110 (another thread's flag)
                await trio.sleep(0.001)
        before = store.committer.batches

        all_done = trio.Event()

        def on_done(n: int) -> Any:
            def hook(result: Any, error: BaseException | None) -> None:
                done.append((n, error or result))
                if len(done) == 50:
                    all_done.set()

            return hook

        async def one(n: int) -> None:
            store.submit(partial(number, n=n), on_done(n))

        async with trio.open_nursery() as writers:
            for n in range(50):
                writers.start_soon(one, n)
        with trio.fail_after(5):
            await all_done.wait()
        store.close()
    assert store.committer.batches - before == 1
    assert sorted(done) == [(n, n) for n in range(50)]
