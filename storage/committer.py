"""Group commit: many concurrent writers, one synced LMDB transaction per batch.

Callers hand an :class:`~storage.env.Op` to :meth:`Committer.write` and wait. One writer task
takes everything queued (up to ``max_batch``), runs the whole batch in one write transaction
in a worker thread (``trio.to_thread.run_sync``: the fsync never stalls the event loop, and the
transaction lives and dies in that one thread), then, back on the loop thread and in commit
order, runs each op's ``on_done`` hook (which wakes an awaiting caller). While one batch syncs, the
next one queues up, so batch size grows with load by itself.

Running the hooks in the writer task, in order, is what makes delivery order equal commit order
(msg_id and inbox seq order) without any per-channel locking: see docs/protocol.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from storage.env import Env, MapFull, Op, Txn
from storage.errors import StorageUnavailable

log = logging.getLogger("chatd.storage")
T = TypeVar("T")


class Committer:
    def __init__(self, env: Env, *, max_batch: int = 1000, queue_size: int = 100_000) -> None:
        self._env = env
        self._max_batch = max_batch
        self._send, self._recv = trio.open_memory_channel[Op](queue_size)
        self.batches = 0
        self.ops = 0

    async def write(
        self, fn: Callable[[Txn], T], after_commit: Callable[[T], None] | None = None
    ) -> T:
        """Run ``fn(txn)`` in the next batch; return its result once durable.

        If the caller is cancelled after queueing, the op still commits and its hook still runs.
        """
        done = trio.Event()

        def finished(op: Op) -> None:
            try:
                if op.error is None and after_commit is not None:
                    after_commit(op.result)
            finally:
                done.set()

        op = Op(fn, finished)
        try:
            await self._send.send(op)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StorageUnavailable("storage is shutting down") from None
        await done.wait()
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[no-any-return]

    def submit(self, fn: Callable[[Txn], Any], on_done: Callable[[Op], None]) -> None:
        """Queue ``fn`` without waiting; ``on_done(op)`` runs after its batch, in commit order.

        Raises ``trio.WouldBlock`` when the queue is full and StorageUnavailable when closed.
        """
        try:
            self._send.send_nowait(Op(fn, on_done))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StorageUnavailable("storage is shutting down") from None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer loop; returns after :meth:`close` once the queue is drained."""
        task_status.started()
        async with self._recv:
            async for first in self._recv:
                batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        batch.append(self._recv.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                with trio.CancelScope(shield=True):
                    await self._commit(batch)

    async def _commit(self, batch: list[Op]) -> None:
        while True:
            try:
                await trio.to_thread.run_sync(self._env.commit_batch, batch)
                break
            except MapFull:
                try:
                    self._env.grow()
                except StorageUnavailable as exc:
                    log.error("%s", exc)
                    for op in batch:
                        op.result, op.error = None, exc
                    break
        self.batches += 1
        self.ops += len(batch)
        for op in batch:
            try:
                op.on_done(op)
            except Exception:  # a bug in one hook must not strand the other callers
                log.exception("after-commit hook failed")

    def close(self) -> None:
        """Stop taking writes; :meth:`run` finishes what is queued, then returns."""
        self._send.close()
