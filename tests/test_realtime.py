"""1:1 messaging over real WebSockets: acks, fan-out to devices, sync, resend, order, restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from chatd.client import ChatClient, HttpClient, Session
from chatd.server import Server
from tests.conftest import make_config, make_user, running


async def next_msgs(session: Session, n: int) -> list[dict[str, Any]]:
    out = []
    with trio.fail_after(10):
        while len(out) < n:
            frame = await session.next_frame()
            if frame["type"] == "msg":
                out.append(frame)
    return out


async def assert_quiet(session: Session) -> None:
    """No further ``msg`` arrives (a ping round trip flushes the pipe first)."""
    await session.ping()
    leftover = []
    while session._in_recv.statistics().current_buffer_used:
        leftover.append(await session.next_frame())
    assert [f for f in leftover if f["type"] == "msg"] == []


async def test_three_devices_each_get_every_message_once_in_order(server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    async with (
        alice.session() as a1,
        alice.session() as a2,
        alice.session() as a3,
        bob.session() as b1,
        bob.session() as b2,
        bob.session() as b3,
    ):
        acks = []
        for i in range(20):
            sender, to = (a1, "bob") if i % 2 == 0 else (b1, "alice")
            acks.append(await sender.send(to=to, body=f"m{i}"))
        assert [a["msg_id"] for a in acks] == list(range(1, 21))
        # Sending devices see only the other side's messages; the rest see all 20.
        for device, expect in ((a1, 10), (b1, 10), (a2, 20), (a3, 20), (b2, 20), (b3, 20)):
            got = await next_msgs(device, expect)
            ids = [m["msg_id"] for m in got]
            assert ids == sorted(set(ids)), ids
            seqs = [m["inbox"] for m in got]
            assert seqs == sorted(set(seqs))
            if expect == 20:
                assert [m["body"] for m in got] == [f"m{i}" for i in range(20)]
                assert seqs == list(range(1, 21))
            await assert_quiet(device)
        a_from_b = await next_msgs(a2, 0)
        assert a_from_b == []


async def test_offline_device_catches_up_via_since(server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    async with bob.session() as b:
        cursor = b.cursor
        assert cursor == 0
    async with alice.session() as a:
        for i in range(500):
            await a.send(to="bob", body=f"n{i}")
    async with bob.session(since=cursor) as b:
        got = await next_msgs(b, 500)
        with trio.fail_after(5):
            await b.synced.wait()
        assert [m["inbox"] for m in got] == list(range(1, 501))
        assert [m["body"] for m in got] == [f"n{i}" for i in range(500)]
        assert b.cursor == 500
        await assert_quiet(b)


async def test_messages_during_replay_arrive_once_and_in_order(server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    async with alice.session() as a:
        for i in range(300):
            await a.send(to="bob", body=f"old{i}")

        async def keep_sending() -> None:
            for i in range(100):
                await a.send(to="bob", body=f"new{i}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_sending)
            async with bob.session(since=0) as b:
                got = await next_msgs(b, 400)
        assert [m["inbox"] for m in got] == list(range(1, 401))


async def test_resend_same_ref_after_disconnect_stores_one_message(server: Server) -> None:
    alice = await make_user(server, "alice")
    await make_user(server, "bob")
    async with alice.session() as a:
        first = await a.send(to="bob", body="once", ref="ref-1")
    async with alice.session() as a:
        again = await a.send(to="bob", body="once", ref="ref-1")
        history = await a.history("dm:alice:bob")
    assert again == first
    assert [m["body"] for m in history] == ["once"]


async def test_reconnecting_session_resends_unacked_and_resumes(server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    async with bob.session() as b, alice.session() as a:
        await a.send(to="bob", body="before")
        # Force a drop of bob's device as a drain would; the client reconnects with since.
        for conn in list(server.app.sessions.devices("bob")):
            conn.close(1001, "test drop")
        await a.send(to="bob", body="after")
        got = await next_msgs(b, 2)
        assert [m["body"] for m in got] == ["before", "after"]
        assert b.connects == 2


async def test_concurrent_senders_keep_per_channel_order(server: Server) -> None:
    target = await make_user(server, "target")
    senders = [await make_user(server, f"sender_{i:02}") for i in range(50)]
    async with target.session() as t:

        async def run(client: ChatClient) -> None:
            async with client.session() as s:
                for i in range(10):
                    await s.send(to="target", body=f"{client.user_id}:{i}")

        async with trio.open_nursery() as nursery:
            for client in senders:
                nursery.start_soon(run, client)
        got = await next_msgs(t, 500)
    assert [m["inbox"] for m in got] == list(range(1, 501))
    by_channel: dict[str, list[dict[str, Any]]] = {}
    for m in got:
        by_channel.setdefault(m["channel"], []).append(m)
    assert len(by_channel) == 50
    for msgs in by_channel.values():
        assert [m["msg_id"] for m in msgs] == list(range(1, 11))
        assert [m["body"].split(":")[1] for m in msgs] == [str(i) for i in range(10)]


async def test_restart_loses_no_acked_message(data_dir: Path) -> None:
    config = make_config(data_dir)
    acked: list[dict[str, Any]] = []
    async with running(config) as server:
        alice = await make_user(server, "alice")
        bob = await make_user(server, "bob")
        async with alice.session(reconnect=False) as a:
            half_acked = trio.Event()

            async def send(i: int) -> None:
                try:
                    acked.append(await a.send(to="bob", body=f"x{i}", ref=f"r{i}"))
                except ConnectionClosed:
                    return  # cut off by the drain: not acked, so nothing was promised
                if len(acked) == 50:
                    half_acked.set()

            async with trio.open_nursery() as nursery:
                for i in range(300):
                    nursery.start_soon(send, i)
                await half_acked.wait()
                server.drain()
    assert len(acked) >= 50
    async with running(config) as server:
        bob.base_url = server.url
        bob.token = None
        bob.ws_url = ""
        async with bob.session(since=0) as b:
            with trio.fail_after(10):
                await b.synced.wait()
            history = await b.history("dm:alice:bob", limit=100)
            stored = {m["msg_id"] for m in history}
            while len(history) == 100:
                history = await b.history("dm:alice:bob", before=history[0]["msg_id"], limit=100)
                stored |= {m["msg_id"] for m in history}
    assert {ack["msg_id"] for ack in acked} <= stored
    assert sorted(stored) == list(range(1, len(stored) + 1))


async def test_history_over_http_and_ws(server: Server) -> None:
    alice = await make_user(server, "alice")
    await make_user(server, "bob")
    await make_user(server, "eve")
    async with alice.session() as a:
        for i in range(120):
            await a.send(to="bob", body=f"h{i}")
        page = await a.history("dm:alice:bob")
        assert [m["msg_id"] for m in page] == list(range(71, 121))
        page = await a.history("dm:alice:bob", before=71, limit=500)
        assert [m["msg_id"] for m in page] == list(range(1, 71))
        assert set(page[0]) == {"channel", "msg_id", "from", "body", "ts"}
    async with HttpClient(server.url, token=alice.token) as http:
        data = await http.call("GET", "/v1/channels/dm:alice:bob/messages?after=10&limit=5")
        assert [m["msg_id"] for m in data["messages"]] == [11, 12, 13, 14, 15]
        data = await http.call("GET", "/v1/channels/dm:alice:bob/messages?before=3")
        assert [m["msg_id"] for m in data["messages"]] == [1, 2]
        data = await http.call("GET", "/v1/channels/dm:alice:bob/messages")
        assert len(data["messages"]) == 50 and data["messages"][-1]["msg_id"] == 120
        bad = await http.request("GET", "/v1/channels/dm:alice:bob/messages?limit=x")
        assert bad.status == 400 and bad.json()["error"] == "bad_request"
    eve = ChatClient(server.url, "eve", "correct horse")
    await eve.login()
    async with HttpClient(server.url, token=eve.token) as http:
        res = await http.request("GET", "/v1/channels/dm:alice:bob/messages")
        assert res.status == 403 and res.json()["error"] == "forbidden"


async def test_msgpack_subprotocol(server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    bob.binary = True
    async with alice.session() as a, bob.session() as b:
        await a.send(to="bob", body="binary please")
        (msg,) = await next_msgs(b, 1)
        assert msg["body"] == "binary please"
        ack = await b.send(to="alice", body="back")
        assert ack["msg_id"] == 2
        (msg,) = await next_msgs(a, 1)
        assert msg["body"] == "back" and msg["from"] == "bob"
