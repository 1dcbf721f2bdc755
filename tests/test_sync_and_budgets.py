"""Sync exactly-once under a concurrent commit, read receipts and history bounded per user,
and outbound byte budgets for history pages and replays (real sockets, real LMDB)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from chatd.server import Server
from storage import Store
from storage.env import Op, Txn
from tests import wsraw
from tests.conftest import make_user
from tests.wsraw import RawWs


@pytest.fixture(autouse=True)
async def close_raw_sockets() -> AsyncIterator[None]:
    yield
    await wsraw.close_all()


class CommitGate:
    """Holds the committer's batches at the door of the real ``Env.commit_batch`` until the
    test opens the gate; the batch then commits in the committer's own worker thread, through
    the real LMDB code. Only the timing changes. The gate stays open once opened."""

    def __init__(self, store: Store) -> None:
        self._env = store.env
        self._commit = store.env.commit_batch
        self.waiting = threading.Event()  # a batch is held at the gate
        self._open = threading.Event()
        self._done = threading.Event()  # the first held batch is committed

    def __enter__(self) -> CommitGate:
        self._env.commit_batch = self._gated  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self._open.set()

    def _gated(self, batch: Sequence[Op]) -> None:
        self.waiting.set()
        self._open.wait(30)
        try:
            self._commit(batch)
        finally:
            self._done.set()

    def release(self) -> None:
        """Open the gate and return once the held batch is durable (blocks this thread)."""
        self._open.set()
        assert self._done.wait(10), "the held batch did not commit"

    async def held(self) -> None:
        assert await trio.to_thread.run_sync(self.waiting.wait, 10), "no batch reached the gate"


async def connect(server: Server, token: str | None, **hello: Any) -> RawWs:
    ws, head = await RawWs.connect(server.port)
    assert ws is not None, head
    await ws.send({"type": "hello", "token": token, **hello})
    welcome = await ws.recv()
    assert welcome is not None and welcome["type"] == "welcome", welcome
    return ws


async def frames_until(ws: RawWs, kind: str) -> list[dict[str, Any]]:
    """Every frame up to and including the first of ``kind``; fails if the server closes."""
    out = []
    with trio.fail_after(20):
        while True:
            frame = await ws.recv()
            assert frame is not None, f"closed with {ws.close_code} after {len(out)} frames"
            out.append(frame)
            if frame["type"] == kind:
                return out


async def round_trip(ws: RawWs) -> list[dict[str, Any]]:
    """Everything the server sent before answering a ping (the pong excluded)."""
    await ws.send({"type": "ping"})
    return (await frames_until(ws, "pong"))[:-1]


# -- 1. sync is exactly-once under a concurrent commit


@contextmanager
def commit_after_last_sync_read(
    store: Store, gate: CommitGate, syncing: Callable[[], bool], user: str, since: int
) -> Iterator[dict[str, int]]:
    """Let the held batch commit right after the replay's read that finds nothing new.

    Every read transaction opened while ``user``'s device syncs is looked at as it ends: the
    first one whose snapshot shows no inbox entry beyond what earlier reads (or ``since``)
    covered is the replay's last read. The gate opens the moment that transaction closes, so
    the batch commits (in the committer's worker thread) before the replay takes its next
    step. Yields what happened: ``{"after_read": n, "head": inbox head after the commit}``.
    """
    real = store.env.read
    seen = since
    reads = 0
    report: dict[str, int] = {}

    @contextmanager
    def read() -> Iterator[Txn]:
        nonlocal seen, reads
        head = None
        with real() as txn:
            yield txn
            if syncing() and not report:
                head = txn.scan_last_id("inboxes", user)
        if head is None:
            return
        reads += 1
        if head == seen:
            gate.release()
            with real() as after:
                report.update(after_read=reads, head=after.scan_last_id("inboxes", user))
        seen = head

    store.env.read = read  # type: ignore[method-assign]
    try:
        yield report
    finally:
        store.env.read = real  # type: ignore[method-assign]


@pytest.mark.parametrize("backlog", [0, 5])
async def test_sync_is_exactly_once_when_a_batch_commits_between_reads(
    server: Server, backlog: int
) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    store = server.app.store

    def bob_syncing() -> bool:
        return any(c.syncing for c in server.app.sessions.devices("bob"))

    async with alice.session(heartbeat=None) as a, trio.open_nursery() as nursery:
        for i in range(backlog):
            await a.send(to="bob", body=f"old{i}")
        await store.committer.write(lambda txn: None)  # nothing else left in the queue
        with CommitGate(store) as gate:
            acked = trio.Event()

            async def send_live() -> None:
                await a.send(to="bob", body="live")
                acked.set()

            nursery.start_soon(send_live)
            await gate.held()  # "live" is being committed, not yet visible
            with commit_after_last_sync_read(store, gate, bob_syncing, "bob", 0) as report:
                b = await connect(server, bob.token, since=0)
                got = await frames_until(b, "synced")
            with trio.fail_after(10):
                await acked.wait()
            got += await round_trip(b)
    # The commit really landed between the replay's last read and its switch to live.
    assert report == {"after_read": 1 if backlog == 0 else 2, "head": backlog + 1}
    msgs = [f for f in got if f["type"] == "msg"]
    assert [m["inbox"] for m in msgs] == list(range(1, backlog + 2))
    assert [m["body"] for m in msgs] == [f"old{i}" for i in range(backlog)] + ["live"]
    # ``synced.head`` is exactly what was replayed before it; the rest came live after it.
    at = next(i for i, f in enumerate(got) if f["type"] == "synced")
    replayed = [f["inbox"] for f in got[:at] if f["type"] == "msg"]
    assert got[at]["head"] == (replayed[-1] if replayed else 0)


async def test_inbox_page_reads_entries_and_head_in_one_snapshot(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), sync=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for i in range(3):
            await store.append_message(
                sender="alice",
                ref=f"r{i}",
                channel="dm:alice:bob",
                members=["alice", "bob"],
                body=f"m{i}",
                ts=1,
            )
        page = store.inbox_page("bob", 0, 2)
        assert [e.seq for e in page.entries] == [1, 2] and page.head == 3
        page = store.inbox_page("bob", 3, 100)
        assert page.entries == [] and page.head == 3
        assert store.inbox_page("nobody", 0, 100).head == 0
        store.close()
