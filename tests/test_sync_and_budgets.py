"""Sync exactly-once under a concurrent commit, read receipts and history bounded per user,
and outbound byte budgets for history pages and replays (real sockets, real LMDB)."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from chatd.client import ChatClient, HttpClient
from chatd.domain.messaging_tx import append_message
from chatd.net.websocket import MAX_INFLIGHT
from chatd.protocol.session import State
from chatd.server import Server
from storage import Store, message_bytes
from storage.env import Op, Txn
from tests import wsraw
from tests.conftest import PASSWORD, make_config, make_user, running
from tests.wsraw import RawWs, client_frame


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
        return any(c.session.state is State.SYNCING for c in server.app.sessions.devices("bob"))

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
            op = partial(
                append_message,
                sender="alice",
                ref=f"r{i}",
                channel="dm:alice:bob",
                members=["alice", "bob"],
                body=f"m{i}",
                ts=1,
            )
            await store.write(op, size=message_bytes(f"m{i}"))
        page = store.inbox_page("bob", 0, 2)
        assert [e.seq for e in page.entries] == [1, 2] and page.head == 3
        page = store.inbox_page("bob", 3, 100)
        assert page.entries == [] and page.head == 3
        assert store.inbox_page("nobody", 0, 100).head == 0
        store.close()


# -- 2. read receipts: rate-limited, in flight, coalesced


async def group_with_messages(server: Server, owner: str, members: list[str], count: int) -> str:
    clients = {u: await make_user(server, u) for u in [owner, *members]}
    async with HttpClient(server.url, token=clients[owner].token) as http:
        group = await http.call("POST", "/v1/groups", {"name": "reads", "members": members})
    channel: str = group["channel_id"]
    async with clients[owner].session(heartbeat=None) as s:
        for i in range(count):
            await s.send(channel=channel, body=f"m{i}")
    return channel


def burst(frames: list[dict[str, Any]]) -> bytes:
    """Client frames for one TCP write (so the server reads them in one batch)."""
    return b"".join(client_frame(0x1, json.dumps(f).encode()) for f in frames)


async def test_a_burst_of_reads_is_coalesced_into_few_commits_and_relays(server: Server) -> None:
    others = ["m_one", "m_two", "m_three"]
    channel = await group_with_messages(server, "owner", ["ann", *others], 50)
    tokens = {u: (await login(server, u)) for u in ["owner", "ann", *others]}
    watchers = {u: await connect(server, tokens[u]) for u in ["owner", *others]}
    ann, ann_other = await connect(server, tokens["ann"]), await connect(server, tokens["ann"])
    watchers["ann (other device)"] = ann_other
    await ann.send_raw(burst([read_frame(channel, i) for i in range(1, 51)]))
    for name, ws in watchers.items():
        relays = []
        with trio.fail_after(10):
            while not relays or relays[-1] < 50:
                frame = await ws.recv()
                assert frame is not None, f"{name} closed with {ws.close_code}"
                if frame["type"] == "read":
                    assert frame["user_id"] == "ann" and frame["channel"] == channel
                    relays.append(frame["msg_id"])
        relays += [f["msg_id"] for f in await round_trip(ws) if f["type"] == "read"]
        assert relays == sorted(set(relays)) and relays[-1] == 50, (name, relays)
        assert len(relays) <= 3, (name, relays)
    assert [f for f in await round_trip(ann) if f["type"] == "read"] == []
    async with HttpClient(server.url, token=tokens["ann"]) as http:
        listing = await http.call("GET", "/v1/channels")
    (row,) = [c for c in listing["channels"] if c["channel_id"] == channel]
    assert row["read_msg_id"] == 50 and row["unread"] == 0


async def login(server: Server, user: str) -> str:
    async with HttpClient(server.url) as http:
        data = await http.call("POST", "/v1/login", {"user_id": user, "password": PASSWORD})
    return data["token"]  # type: ignore[no-any-return]


async def test_reads_are_rate_limited_per_user(data_dir: Path) -> None:
    config = make_config(data_dir, limits={"read_rate": 0.001, "read_burst": 5})
    async with running(config) as server:
        channel = await group_with_messages(server, "owner", ["ann"], 8)
        token = await login(server, "ann")
        owner = await connect(server, await login(server, "owner"))
        first, second = await connect(server, token), await connect(server, token)
        await first.send_raw(burst([read_frame(channel, i) for i in range(1, 5)]))
        await second.send_raw(burst([read_frame(channel, i) for i in range(5, 9)]))
        # The bucket is per user: 5 reads pass across both devices, the rest are refused.
        errors = [f for f in await round_trip(first) if f["type"] == "error"]
        errors += [f for f in await round_trip(second) if f["type"] == "error"]
        assert [e["code"] for e in errors] == ["rate_limited"] * 3
        assert all(isinstance(e["retry_after"], int) and e["retry_after"] > 0 for e in errors)
        relays = [(await frames_until(owner, "read"))[-1]["msg_id"]]
        while relays[-1] != 5:
            relays.append((await frames_until(owner, "read"))[-1]["msg_id"])
        assert relays == sorted(set(relays))
        async with HttpClient(server.url, token=token) as http:
            listing = await http.call("GET", "/v1/channels")
        (row,) = [c for c in listing["channels"] if c["channel_id"] == channel]
        assert row["read_msg_id"] == 5


async def test_reads_count_as_in_flight_until_committed(server: Server) -> None:
    channel = await group_with_messages(server, "owner", ["ann"], 10)
    token = await login(server, "ann")
    ann = await connect(server, token)
    (conn,) = server.app.sessions.devices("ann")
    await server.app.store.committer.write(lambda txn: None)
    with CommitGate(server.app.store) as gate:
        await ann.send_raw(burst([read_frame(channel, 1 + i % 10) for i in range(300)]))
        # Every read waits for its commit: past MAX_INFLIGHT the connection stops reading.
        with trio.fail_after(10):
            while conn.acks_waiter is None:  # noqa: ASYNC110 (server state with no event)
                await trio.sleep(0.01)
        assert conn.session.inflight >= MAX_INFLIGHT
        await gate.held()
        gate.release()
        assert [f["type"] for f in await round_trip(ann)] == []
    assert conn.session.inflight == 0
    async with HttpClient(server.url, token=token) as http:
        listing = await http.call("GET", "/v1/channels")
    (row,) = [c for c in listing["channels"] if c["channel_id"] == channel]
    assert row["read_msg_id"] == 10


def read_frame(channel: str, msg_id: int) -> dict[str, Any]:
    return {"type": "read", "channel": channel, "msg_id": msg_id}


# -- 3. history is rate-limited per user, over WebSocket and HTTP together


async def test_history_is_rate_limited_per_user_over_ws_and_http(data_dir: Path) -> None:
    config = make_config(data_dir, limits={"history_rate": 0.001, "history_burst": 3})
    async with running(config) as server:
        alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
        async with alice.session(heartbeat=None) as a:
            await a.send(to="bob", body="hi")
        ws = await connect(server, alice.token)
        path = "/v1/channels/dm:alice:bob/messages"
        async with HttpClient(server.url, token=alice.token) as http:
            for i in range(2):
                await ws.send({"type": "history", "ref": f"h{i}", "channel": "dm:alice:bob"})
                (reply,) = await frames_until(ws, "history")
                assert [m["body"] for m in reply["messages"]] == ["hi"]
            assert (await http.call("GET", path))["messages"][0]["body"] == "hi"
            # The bucket (burst 3) is spent: both transports refuse, with a retry hint.
            await ws.send({"type": "history", "ref": "h3", "channel": "dm:alice:bob"})
            (error,) = await frames_until(ws, "error")
            assert error["code"] == "rate_limited" and error["ref"] == "h3"
            assert isinstance(error["retry_after"], int) and error["retry_after"] > 0
            res = await http.request("GET", path)
            assert res.status == 429 and res.json()["error"] == "rate_limited"
            assert res.json()["retry_after"] > 0 and int(res.headers["retry-after"]) >= 1
        async with HttpClient(server.url, token=bob.token) as http:  # per user: bob is fine
            assert len((await http.call("GET", path))["messages"]) == 1


# -- 4. outbound budgets in bytes: history pages and replays never overflow a device

BIG = "\U0001f600" * 99_998  # with a 2-digit number: 100,000 characters, ~400 KB of UTF-8


async def big_channel(server: Server, count: int = 11) -> tuple[ChatClient, ChatClient]:
    """alice sent bob ``count`` messages of 100,000 four-byte characters (msgpack: as UTF-8)."""
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    alice.binary = True
    async with alice.session(heartbeat=None) as a:
        for i in range(count):
            await a.send(to="bob", body=f"{i:02}{BIG}")
    return alice, bob


def encoded_size(frame: dict[str, Any], binary: bool) -> int:
    if binary:
        return len(msgpack.packb(frame))
    return len(json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode())


def numbers(messages: list[dict[str, Any]]) -> list[int]:
    return [int(m["body"][:2]) for m in messages]


async def test_a_history_page_of_huge_messages_fits_the_outbound_cap(server: Server) -> None:
    _, bob = await big_channel(server)
    cap = server.app.config.limits.outbound_queue_bytes
    for binary in (False, True):
        ws, head = await RawWs.connect(
            server.port, protocol="chatd.v1.msgpack" if binary else "chatd.v1.json"
        )
        assert ws is not None, head
        await ws.send({"type": "hello", "token": bob.token})
        assert (await ws.recv() or {}).get("type") == "welcome"
        got: list[int] = []
        before = None
        for _ in range(12):
            frame = {"type": "history", "ref": "h", "channel": "dm:alice:bob", "limit": 11}
            if before is not None:
                frame["before"] = before
            await ws.send(frame)
            (reply,) = await frames_until(ws, "history")
            page = reply["messages"]
            assert page and all(m["body"][2:] == BIG for m in page)
            assert encoded_size(reply, binary) <= cap // 2
            got = numbers(page) + got
            if not reply["more"]:
                break
            before = page[0]["msg_id"]
        assert got == list(range(11))  # every message once, in order, over several pages
        await round_trip(ws)  # still open


async def test_http_history_pages_huge_messages_by_bytes(server: Server) -> None:
    _, bob = await big_channel(server)
    cap = server.app.config.limits.outbound_queue_bytes
    got: list[int] = []
    path = "/v1/channels/dm:alice:bob/messages?limit=11"
    async with HttpClient(server.url, token=bob.token) as http:
        page = await http.call("GET", path)
        while True:
            assert page["messages"] and encoded_size(page, False) <= cap // 2
            got = numbers(page["messages"]) + got
            if not page["more"]:
                break
            page = await http.call("GET", f"{path}&before={page['messages'][0]['msg_id']}")
        assert got == list(range(11))
        # Forward paging with ``after`` is cut the same way; ``more`` then means newer ones.
        forward = await http.call("GET", f"{path}&after=0")
        assert numbers(forward["messages"]) == [0] and forward["more"] is True
        last = await http.call("GET", f"{path}&after=10")
        assert numbers(last["messages"]) == [10] and last["more"] is False


async def test_sync_over_huge_messages_is_whole_and_never_overflows(server: Server) -> None:
    _, bob = await big_channel(server, count=20)
    for binary in (False, True):
        ws, head = await RawWs.connect(
            server.port, protocol="chatd.v1.msgpack" if binary else "chatd.v1.json"
        )
        assert ws is not None, head
        await ws.send({"type": "hello", "token": bob.token, "since": 0})
        got = await frames_until(ws, "synced")
        msgs = [f for f in got if f["type"] == "msg"]
        assert [m["inbox"] for m in msgs] == list(range(1, 21))
        assert numbers(msgs) == list(range(20)) and got[-1]["head"] == 20
        await round_trip(ws)


async def test_client_history_on_huge_messages_returns_and_pages_to_the_start(
    server: Server,
) -> None:
    _, bob = await big_channel(server)
    async with bob.session(heartbeat=None) as b:
        with trio.fail_after(20):
            page = await b.history("dm:alice:bob", limit=11)
            assert numbers(page) == [10]
            pages = [p async for p in b.history_pages("dm:alice:bob", limit=11)]
        assert b.connects == 1  # never closed for an oversize reply
    assert [numbers(p) for p in pages] == [[i] for i in range(10, -1, -1)]


async def test_storage_pages_are_cut_by_bytes_and_say_whether_more_lie_beyond(
    tmp_path: Path,
) -> None:
    store = Store(str(tmp_path / "db"), sync=False)
    ch = "dm:alice:bob"
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for i in range(1, 11):
            body = str(i % 10) * 1000
            op = partial(
                append_message, sender="alice", ref=f"r{i}", channel=ch, members=["alice", "bob"],
                body=body, ts=1,
            )  # fmt: skip
            await store.write(op, size=message_bytes(body))
        record = 1030  # about one stored message: three fit in 3,500 bytes, four do not

        def page(**kw: Any) -> tuple[list[int], bool]:
            got = store.history(ch, **{"limit": 100, **kw})
            return [m.msg_id for m in got.messages], got.more

        assert page(max_bytes=3 * record) == ([8, 9, 10], True)
        assert page(before=8, max_bytes=3 * record) == ([5, 6, 7], True)
        assert page(before=2, max_bytes=3 * record) == ([1], False)
        assert page(after=0, max_bytes=3 * record) == ([1, 2, 3], True)
        assert page(after=8, max_bytes=3 * record) == ([9, 10], False)
        assert page(after=0, before=3) == ([1, 2], False)
        assert page(after=0, before=4, limit=2) == ([1, 2], True)
        assert page() == (list(range(1, 11)), False)
        assert page(limit=9) == (list(range(2, 11)), True)
        assert page(max_bytes=1) == ([10], True)  # one message always goes out
        assert page(before=1) == ([], False) and page(after=10) == ([], False)
        assert [e.seq for e in store.inbox_page("bob", 0, 100, 3 * record).entries] == [1, 2, 3]
        assert [e.seq for e in store.inbox_page("bob", 4, 100, 1).entries] == [5]
        assert len(store.inbox_page("bob", 0, 100).entries) == 10
        store.close()
