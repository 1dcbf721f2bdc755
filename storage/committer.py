"""Group commit: many concurrent writers, one synced LMDB transaction per batch.

Callers hand an :class:`~storage.env.Op` to :meth:`Committer.write` (or :meth:`~Committer.submit`)
and wait. The op goes straight onto the queue of the one dedicated writer thread,
``chatd-lmdb-writer`` (:class:`~storage.writer.WriterThread`, started and stopped by
:meth:`Committer.run`). That thread takes everything queued (up to ``max_batch``), runs the
whole batch in one write transaction (the fsync never stalls the event loop), and hands the
batch back to the event loop with one ``TrioToken.run_sync_soon``; the committer's task then
runs each op's ``on_done`` hook (which wakes an awaiting caller), batch after batch in commit
order. While one batch syncs, the next one queues up, so batch size grows with load by itself.

Running the hooks in one task, in commit order, is what makes delivery order equal commit order
(msg_id and inbox seq order) without any per-channel locking: see docs/protocol.md.

**One writer thread, one call per transaction.** Only the writer thread starts write
transactions, one batch at a time. Its call of :meth:`Env.commit_batch
<storage.env.Env.commit_batch>` begins the write transaction, runs every op, and commits (or
aborts) it before returning: a transaction never outlives the synchronous call that began it,
so it is never held across an ``await`` and never touched by two threads (LMDB's write lock
belongs to the thread that took it). ``tests/test_storage_guards.py`` and
``tests/test_storage_writer.py`` check both. When the map
is full the thread asks the event loop to grow it (between the loop's reads, none of which
spans an ``await``) and runs the batch again.

Why this shape (bench/README.md, "Dedicated writer thread"): per op the event loop appends to
a list under a lock; per batch there is one wake of the loop (``run_sync_soon``) and, only if
the thread sleeps, one wake of the thread. The thread is not woken by the op that finds it
asleep but by the committer's task, which runs after the other tasks of that loop tick: the
ops they queue make one batch (woken at once, the thread took one or two ops per batch at
moderate rates and cost more CPU per message). And the commits stay out of trio's thread
cache, where a thread that had hashed a password runs at nice 19 (chatd/domain/accounts.py).
``tests/test_storage_writer.py`` checks the thread, its shutdown and the one-tick batch.

The queue is bounded twice: in ops (``queue_size``) and in approximate bytes (``max_bytes``).
Each op carries a size hint (a message's body dominates); its bytes count from the moment it is
queued until its batch is committed and its hook has run, because that is how long its data
stays alive. Past either cap :meth:`Committer.submit` raises ``trio.WouldBlock`` and
:meth:`Committer.write` waits for room. One op is always taken into an empty queue, so an op
bigger than the cap still commits (alone).

Shutdown: :meth:`Committer.close` stops new writes and lets the thread commit what is queued;
:meth:`Committer.run` returns once it has. If ``run`` is cancelled instead, the thread ends
after the batch in flight (whose hooks still run) and every op still queued fails with
StorageUnavailable.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

import trio

from storage.env import Env, MapFull, Op
from storage.errors import StorageUnavailable
from storage.writer import WriterThread

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
        self._queue_size = queue_size
        self._max_bytes = max_bytes
        self._writer = WriterThread(max_batch=max_batch)
        self._kick = False  # the thread sleeps with ops queued: run() wakes it this tick
        self._closed = False
        #: Size hints of the ops queued or in the batch being committed.
        self.queued_bytes = 0
        self._room: trio.Event | None = None  # set when bytes are given back
        self.batches = 0
        self.ops = 0
        # Batches committed by the thread whose hooks have not run yet, in commit order.
        self._done: deque[tuple[list[Op], int]] = deque()
        self._exited = False  # the thread has ended (set on the loop)
        self._arrival = trio.lowlevel.ParkingLot()  # run() waits here for the thread
        self._token: trio.lowlevel.TrioToken | None = None
        #: entered around each batch's hooks (``Store.gather_hooks``)
        self.hook_scope: AbstractContextManager[Any] = nullcontext()

    def _full(self, size: int) -> bool:
        return (self.queued_bytes > 0 and self.queued_bytes + size > self._max_bytes) or len(
            self._writer
        ) >= self._queue_size

    def _queue(self, op: Op, size: int) -> None:
        if self._closed:
            raise StorageUnavailable("storage is shutting down")
        self.queued_bytes += size
        if self._writer.put(op, size) and not self._kick:
            # Wake the thread from run() (next in this loop tick), not here: the ops the
            # other tasks of this tick queue join the same batch.
            self._kick = True
            self._arrival.unpark()

    async def write(
        self,
        fn: Callable[[Any], T],
        after_commit: Callable[[T], None] | None = None,
        *,
        size: int = OP_BYTES,
    ) -> T:
        """Run ``fn(tx)`` in the next batch (``tx``: the env's view of the batch transaction);
        return its result once durable.

        Waits first while the queue is full (``size`` is the op's size hint). If the caller is
        cancelled after queueing, the op still commits and its hook still runs.
        """
        while self._full(size) and not self._closed:
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
        self._queue(op, size)
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
        if self._full(size) and not self._closed:
            raise trio.WouldBlock
        self._queue(Op(fn, on_done), size)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the writer thread and run the hooks of its batches; returns after
        :meth:`close` once everything queued is committed. Cancelled, it stops the thread after
        the batch in flight and fails what is still queued (it never leaves the thread
        running)."""
        self._token = trio.lowlevel.current_trio_token()
        self._writer.start(self._token, self._commit, self._arrived, self._thread_exited)
        task_status.started()
        try:
            while True:
                while self._done:
                    self._finish(*self._done.popleft())
                if self._kick:  # after the hooks: they may have queued ops too
                    self._kick = False
                    self._writer.wake()
                if self._exited:
                    return
                await self._arrival.park()
        finally:
            if not self._exited:  # cancelled (or a hook's BaseException): stop the thread
                self._closed = True
                self._writer.halt()
                with trio.CancelScope(shield=True):
                    while not self._exited:
                        await self._arrival.park()
            self._writer.join(1.0)
            while self._done:
                self._finish(*self._done.popleft())
            ops, size = self._writer.take_all()
            if ops:
                error = StorageUnavailable("storage is shutting down")
                for op in ops:
                    op.result, op.error = None, error
                self._finish(ops, size, count=False)

    # -- the writer thread's side
    def _commit(self, batch: list[Op]) -> None:
        """In the writer thread: commit ``batch``; every failure ends up in its ops."""
        try:
            while True:
                try:
                    self._env.commit_batch(batch)
                    return
                except MapFull:
                    # set_mapsize needs no open transaction in the process: the loop's reads
                    # never span an await, so a callback on the loop runs between them.
                    assert self._token is not None
                    trio.from_thread.run_sync(self._env.grow, trio_token=self._token)
        except Exception as exc:  # StorageUnavailable from grow, a gone loop, a bug
            if not isinstance(exc, StorageUnavailable | trio.RunFinishedError):
                log.exception("a write batch failed")
            else:
                log.error("%s", exc)
            if not isinstance(exc, StorageUnavailable):
                exc = StorageUnavailable(f"storage write failed: {exc!r}")
            for op in batch:
                op.result, op.error = None, exc

    # -- back on the event loop
    def _arrived(self, batch: list[Op], size: int) -> None:
        self._done.append((batch, size))
        self._arrival.unpark()

    def _thread_exited(self) -> None:
        self._exited = True
        self._arrival.unpark()

    def _finish(self, batch: list[Op], size: int, *, count: bool = True) -> None:
        if count:
            self.batches += 1
            self.ops += len(batch)
        with self.hook_scope:
            for op in batch:
                try:
                    op.on_done(op.result, op.error)
                except Exception:  # a bug in one hook must not strand the other callers
                    log.exception("after-commit hook failed")
        self._give_back(size)

    def _give_back(self, size: int) -> None:
        self.queued_bytes -= size
        if self._room is not None:
            self._room.set()
            self._room = None

    def close(self) -> None:
        """Stop taking writes; :meth:`run` finishes what is queued, then returns."""
        self._closed = True
        if self._room is not None:  # writers waiting for room: they fail now
            self._room.set()
            self._room = None
        self._writer.stop()
