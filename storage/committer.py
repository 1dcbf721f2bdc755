"""Group commit: many concurrent writers, one synced LMDB transaction per batch.

Callers hand an :class:`~storage.env.Op` to :meth:`Committer.write` and wait. One writer task
takes everything queued (up to ``max_batch``), runs the whole batch in one write transaction
in a worker thread (``trio.to_thread.run_sync``: the fsync never stalls the event loop, and the
transaction lives and dies in that one thread), then, back on the loop thread and in commit
order, runs each op's ``on_done`` hook (which wakes an awaiting caller). While one batch syncs, the
next one queues up, so batch size grows with load by itself.

Running the hooks in the writer task, in order, is what makes delivery order equal commit order
(msg_id and inbox seq order) without any per-channel locking: see docs/protocol.md.

**One writer, one call per transaction.** Only the writer task starts write transactions, and
it awaits one batch at a time (the commit is shielded from cancellation), so at most one worker
thread is inside :meth:`Env.commit_batch <storage.env.Env.commit_batch>` at any moment. That
call begins the write transaction, runs every op, and commits (or aborts) it before returning:
a transaction never outlives the synchronous call that began it, so it is never held across an
``await`` and never touched by two threads (LMDB's write lock is owned by the thread that took
it). The thread is trio's cached worker thread for the call; what matters to LMDB is that begin
and commit happen in the same call, which ``tests/test_storage_guards.py`` checks.

The queue is bounded twice: in ops (``queue_size``) and in approximate bytes (``max_bytes``).
Each op carries a size hint (a message's body dominates); its bytes count from the moment it is
queued until its batch is committed and its hook has run, because that is how long its data
stays alive. Past the byte cap :meth:`Committer.submit` raises ``trio.WouldBlock`` and
:meth:`Committer.write` waits for room. One op is always taken into an empty queue, so an op
bigger than the cap still commits (alone).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from storage.env import Env, MapFull, Op
from storage.errors import StorageUnavailable

log = logging.getLogger("chatd.storage")
T = TypeVar("T")
#: The size hint of an op that stores no message: the Op, its closures and a small record.
OP_BYTES = 512


class Committer:
    def __init__(
        self,
        env: Env,
        *,
        max_batch: int = 1000,
        queue_size: int = 100_000,
        max_bytes: int = 64 << 20,
    ) -> None:
        self._env = env
        self._max_batch = max_batch
        self._send, self._recv = trio.open_memory_channel[tuple[Op, int]](queue_size)
        self._max_bytes = max_bytes
        #: Size hints of the ops queued or in the batch being committed.
        self.queued_bytes = 0
        self._room: trio.Event | None = None  # set when bytes are given back
        self.batches = 0
        self.ops = 0

    def _full(self, size: int) -> bool:
        return self.queued_bytes > 0 and self.queued_bytes + size > self._max_bytes

    async def write(
        self,
        fn: Callable[[Any], T],
        after_commit: Callable[[T], None] | None = None,
        *,
        size: int = OP_BYTES,
    ) -> T:
        """Run ``fn(tx)`` in the next batch (``tx``: the env's view of the batch transaction);
        return its result once durable.

        Waits first while the queue holds ``max_bytes`` (``size`` is the op's size hint).
        If the caller is cancelled after queueing, the op still commits and its hook still runs.
        """
        while self._full(size):
            if self._room is None:
                self._room = trio.Event()
            await self._room.wait()
        done = trio.Event()

        def finished(result: Any, error: BaseException | None) -> None:
            try:
                if error is None and after_commit is not None:
                    after_commit(result)
            finally:
                done.set()

        op = Op(fn, finished)
        self.queued_bytes += size  # before the send: the writer may take the op at once
        queued = False
        try:
            await self._send.send((op, size))
            queued = True
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StorageUnavailable("storage is shutting down") from None
        finally:
            if not queued:  # closed, or cancelled while waiting for a slot
                self._give_back(size)
        await done.wait()
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[no-any-return]

    def submit(
        self,
        fn: Callable[[Any], Any],
        on_done: Callable[[Any, BaseException | None], None],
        *,
        size: int = OP_BYTES,
    ) -> None:
        """Queue ``fn`` without waiting; ``on_done(result, error)`` runs after its batch, in
        commit order.

        Raises ``trio.WouldBlock`` when the queue is full (in ops, or in bytes counting this
        op's ``size`` hint) and StorageUnavailable when closed.
        """
        if self._full(size):
            raise trio.WouldBlock
        try:
            self._send.send_nowait((Op(fn, on_done), size))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StorageUnavailable("storage is shutting down") from None
        self.queued_bytes += size

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer loop; returns after :meth:`close` once the queue is drained."""
        task_status.started()
        async with self._recv:
            async for first, size in self._recv:
                batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        op, op_size = self._recv.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    batch.append(op)
                    size += op_size
                with trio.CancelScope(shield=True):
                    await self._commit(batch)
                self._give_back(size)

    def _give_back(self, size: int) -> None:
        self.queued_bytes -= size
        if self._room is not None:
            self._room.set()
            self._room = None

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
                op.on_done(op.result, op.error)
            except Exception:  # a bug in one hook must not strand the other callers
                log.exception("after-commit hook failed")

    def close(self) -> None:
        """Stop taking writes; :meth:`run` finishes what is queued, then returns."""
        self._send.close()
