"""The dedicated LMDB writer thread: the one OS thread that begins and commits every write
transaction, fed straight from a queue the event loop appends to.

Why a thread of its own, fed directly: the event loop only appends an op to a list (under a
lock held for a few instructions); if the thread sleeps, the caller wakes it once its burst
of puts is over (the committer: once per loop tick, from its task). The thread takes
everything queued (up to ``max_batch``), runs the batch in one call of ``commit`` (which begins
and commits one write transaction), and hands the batch back with one
``TrioToken.run_sync_soon`` per batch. While it commits, the next batch accumulates in the
list. There is no per-batch trio task hop into a thread pool (``trio.to_thread.run_sync``: a
capacity limiter, a cancel scope, a context copy and two thread renames per call), and the
write transaction can never be held across an ``await``: it lives inside one synchronous call
in this thread.

The thread runs no trio code except ``trio.from_thread`` (the committer's map growth).
Everything it hands back goes through ``deliver(batch, size)`` and ``exited()`` on the event
loop (both scheduled with the run's token).
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from collections.abc import Callable

import trio

from storage.env import Op

log = logging.getLogger("chatd.storage")


def _name_os_thread(name: str) -> None:
    """Give the calling thread its name in the kernel too (``top -H``, ``ps -L``, py-spy):
    Python 3.11 names only its own Thread object."""
    if sys.platform == "linux":
        try:
            ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
        except (OSError, AttributeError):
            pass


class WriterThread:
    """A queue of ops and the one thread that commits them in batches.

    Loop side: :meth:`put` (any time, even before :meth:`start`), :meth:`stop`,
    :meth:`halt`, :meth:`take_all` (once the thread has exited). Thread side: ``commit(batch)``
    for each batch (it must not raise: failures go into the ops), then
    ``deliver(batch, size)`` on the loop; ``exited()`` on the loop when the thread ends.
    """

    NAME = "chatd-lmdb-writer"

    def __init__(self, *, max_batch: int) -> None:
        self._max_batch = max_batch
        self._mutex = threading.Lock()  # guards the lists and the flags below
        self._ops: list[Op] = []
        self._sizes: list[int] = []
        self._sleeping = False  # the thread waits on _wake; whoever clears this releases it
        self._stopping = False  # exit once the queue is empty
        self._halting = False  # exit after the batch in flight, leaving the queue
        self._wake = threading.Lock()
        self._wake.acquire()  # locked: nothing to do; released once per _sleeping it clears
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        """Ops queued and not yet taken into a batch."""
        return len(self._ops)

    def put(self, op: Op, size: int) -> bool:
        """Queue ``op`` (``size``: its size hint, handed back with its batch). True if the
        thread sleeps: then call :meth:`wake` once the caller's burst of puts is over (the
        committer does it from its task, so one loop tick's ops make one batch)."""
        with self._mutex:
            self._ops.append(op)
            self._sizes.append(size)
            return self._sleeping

    def wake(self) -> None:
        """Let a sleeping thread take what is queued."""
        with self._mutex:
            if self._sleeping:
                self._sleeping = False
                self._wake.release()

    def start(
        self,
        token: trio.lowlevel.TrioToken,
        commit: Callable[[list[Op]], None],
        deliver: Callable[[list[Op], int], None],
        exited: Callable[[], None],
    ) -> None:
        self._thread = threading.Thread(
            target=self._run,
            args=(token, commit, deliver, exited),
            name=self.NAME,
            daemon=True,  # run() always waits for it; daemon only so a crash never hangs exit
        )
        self._thread.start()

    def stop(self) -> None:
        """Let the thread commit everything queued, then end."""
        self._signal(halt=False)

    def halt(self) -> None:
        """Let the thread end after the batch in flight; the queue stays (see take_all)."""
        self._signal(halt=True)

    def _signal(self, *, halt: bool) -> None:
        with self._mutex:
            self._stopping = True
            self._halting = self._halting or halt
            if self._sleeping:
                self._sleeping = False
                self._wake.release()

    def take_all(self) -> tuple[list[Op], int]:
        """Everything still queued (after the thread ended) and its total size hint."""
        with self._mutex:
            ops, sizes = self._ops, self._sizes
            self._ops, self._sizes = [], []
        return ops, sum(sizes)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> None:
        """Wait for the thread's last instructions after ``exited()`` was posted (microseconds:
        it touches LMDB no more by then)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _take(self) -> tuple[list[Op], list[int]] | bool:
        """The next batch; or True: sleep (``_sleeping`` is set, a put or a stop will release
        ``_wake``); or False: end (stopping, and nothing more to commit)."""
        with self._mutex:
            ops = self._ops
            if ops and not self._halting:
                if len(ops) <= self._max_batch:
                    batch, sizes = ops, self._sizes
                    self._ops, self._sizes = [], []
                else:
                    n = self._max_batch
                    batch, sizes = ops[:n], self._sizes[:n]
                    del ops[:n], self._sizes[:n]
                return batch, sizes
            if self._stopping:
                return False
            self._sleeping = True
            return True

    def _run(
        self,
        token: trio.lowlevel.TrioToken,
        commit: Callable[[list[Op]], None],
        deliver: Callable[[list[Op], int], None],
        exited: Callable[[], None],
    ) -> None:
        _name_os_thread(self.NAME)
        try:
            while True:
                taken = self._take()
                if isinstance(taken, bool):
                    if not taken:
                        return
                    self._wake.acquire()  # until wake() or a stop clears _sleeping
                    continue
                batch, sizes = taken
                commit(batch)
                try:
                    token.run_sync_soon(deliver, batch, sum(sizes))
                except trio.RunFinishedError:
                    return  # the event loop is gone: nobody is waiting any more
        except BaseException:  # pragma: no cover - commit() handles its own failures
            log.exception("the LMDB writer thread failed")
            raise
        finally:
            try:
                token.run_sync_soon(exited)
            except trio.RunFinishedError:
                pass
