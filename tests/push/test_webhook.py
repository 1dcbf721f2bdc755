"""Webhooks end to end: a real server, real LMDB, a real HTTP receiver on loopback."""

from __future__ import annotations

from pathlib import Path

import trio
from trio.testing import MockClock

from chatd.client import HttpClient
from tests.conftest import make_user, running
from tests.push.helpers import (
    pending_jobs,
    push_config,
    subscriptions,
    until,
    verified,
    webhook,
)
from tests.push.receiver import Receiver


async def test_offline_recipient_gets_one_signed_webhook_per_message(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        receiver = Receiver()
        await receiver.start(nursery)
        async with running(push_config(tmp_path / "data", collapse_window=0.05)) as server:
            alice = await make_user(server, "alice")
            bob = await make_user(server, "bob")
            await webhook(server, bob, receiver.url)
            async with alice.session() as a:
                first = await a.send(to="bob", body="hello bob")
                await receiver.wait(1)
                await trio.sleep(0.1)  # past the collapse window: the next one goes alone
                second = await a.send(to="bob", body="x" * 500)
                await receiver.wait(2)
            await until(lambda: pending_jobs(server) == 0)
            one, two = (verified(r.body, r.headers) for r in receiver.requests)
            assert one == {
                "user_id": "bob",
                "channel": "dm:alice:bob",
                "msg_id": 1,
                "from": "alice",
                "preview": "hello bob",
                "ts": first["ts"],
                "count": 1,
            }
            assert (two["msg_id"], two["count"], two["ts"]) == (2, 1, second["ts"])
            assert len(two["preview"]) == 120 and two["preview"].endswith("…")
            assert receiver.requests[0].path == "/hook"
            assert len(receiver.requests) == 2  # exactly one per message, alice gets none
            async with HttpClient(server.url) as http:
                metrics = (await http.request("GET", "/metrics")).body.decode()
            assert "chatd_push_sent_total 2.0" in metrics
            assert "chatd_push_failed_total 0.0" in metrics
        receiver.stop()


async def test_a_burst_collapses_into_one_notification_per_window(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    """The default 10 s window on trio's MockClock: the first message goes at once, the next
    three wait for the window's end and go as one notification with ``count`` 3."""
    async with trio.open_nursery() as nursery:
        receiver = Receiver()
        await receiver.start(nursery)
        async with running(push_config(tmp_path / "data", collapse_window=10.0)) as server:
            alice = await make_user(server, "alice")
            bob = await make_user(server, "bob")
            await webhook(server, bob, receiver.url)
            async with alice.session(heartbeat=None) as a:
                await a.send(to="bob", body="one")
                await receiver.wait(1)
                for body in ("two", "three", "four"):
                    await a.send(to="bob", body=body)
                # Virtual time from here: idle moments jump the clock to the next deadline.
                mock_clock.autojump_threshold = 0.02
                await trio.sleep(9.0)
                assert len(receiver.requests) == 1  # still inside the window
                await receiver.wait(2, within=5.0)
                await trio.sleep(20.0)
                mock_clock.autojump_threshold = float("inf")
            payloads = [verified(r.body, r.headers) for r in receiver.requests]
            assert [(p["msg_id"], p["count"], p["preview"]) for p in payloads] == [
                (1, 1, "one"),
                (4, 3, "four"),
            ]
            assert pending_jobs(server) == 0
        receiver.stop()


async def test_online_recipient_gets_none(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        receiver = Receiver()
        await receiver.start(nursery)
        async with running(push_config(tmp_path / "data")) as server:
            alice = await make_user(server, "alice")
            bob = await make_user(server, "bob")
            await webhook(server, bob, receiver.url)
            await webhook(server, alice, receiver.url)  # the sender is online too
            async with alice.session() as a, bob.session() as b:
                for i in range(3):
                    await a.send(to="bob", body=f"m{i}")
                    frame = await b.next_frame()
                    assert frame["type"] == "msg" and frame["body"] == f"m{i}"
                await trio.sleep(0.3)
                assert pending_jobs(server) == 0  # none was even stored
            assert receiver.requests == []
        receiver.stop()


async def test_receiver_down_for_a_while_gets_it_when_back(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        receiver = Receiver()
        await receiver.start(nursery)
        receiver.stop()  # the port is known; nothing listens: connections are refused
        async with running(push_config(tmp_path / "data")) as server:
            alice = await make_user(server, "alice")
            bob = await make_user(server, "bob")
            await webhook(server, bob, receiver.url)
            async with alice.session() as a:
                await a.send(to="bob", body="are you there?")
            assert server.app.push is not None
            counters = server.app.push.worker.counters
            await until(lambda: counters.retried >= 3)
            await receiver.start(nursery)
            await receiver.wait(1)
            assert verified(receiver.requests[0].body, receiver.requests[0].headers)["msg_id"] == 1
            await until(lambda: pending_jobs(server) == 0)
            assert counters.sent == 1 and counters.failed == 0
        receiver.stop()


async def test_gone_410_removes_the_subscription(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        receiver = Receiver(statuses=[410])
        await receiver.start(nursery)
        async with running(push_config(tmp_path / "data")) as server:
            alice = await make_user(server, "alice")
            bob = await make_user(server, "bob")
            sub_id = await webhook(server, bob, receiver.url)
            assert subscriptions(server, "bob") == [sub_id]
            async with alice.session() as a:
                await a.send(to="bob", body="first")
                await receiver.wait(1, delivered=False)
                await until(lambda: subscriptions(server, "bob") == [])
                await a.send(to="bob", body="second")  # no subscription: no job, no request
                await trio.sleep(0.2)
            assert len(receiver.requests) == 1
            await until(lambda: pending_jobs(server) == 0)
            assert server.app.push is not None
            assert server.app.push.worker.counters.failed == 1
            async with HttpClient(server.url, token=bob.token) as http:
                gone = await http.request("DELETE", f"/v1/push/subscriptions/{sub_id}")
            assert gone.status == 404
        receiver.stop()


async def test_a_job_is_moot_once_a_device_received_the_message(tmp_path: Path) -> None:
    """The receiver fails every try; once bob's device has synced the message, the next retry
    drops the job (counted ``dropped``) instead of sending it."""
    async with trio.open_nursery() as nursery:
        receiver = Receiver(statuses=[503])
        await receiver.start(nursery)
        config = push_config(tmp_path / "data", retry_base=0.2, retry_max=0.4)
        async with running(config) as server:
            alice = await make_user(server, "alice")
            bob = await make_user(server, "bob")
            await webhook(server, bob, receiver.url)
            assert server.app.push is not None
            counters = server.app.push.worker.counters
            async with alice.session() as a:
                await a.send(to="bob", body="sync me")
                await receiver.wait(1, delivered=False)
                async with bob.session(since=0) as b:
                    frame = await b.next_frame()
                    assert frame["type"] == "msg" and frame["body"] == "sync me"
                    await until(lambda: counters.dropped == 1)
                    tries = receiver.attempts
                    await trio.sleep(0.5)  # past any retry: there is none left
            assert receiver.attempts == tries and receiver.delivered() == []
            assert counters.sent == 0 and pending_jobs(server) == 0
        receiver.stop()


async def test_unsubscribe_is_the_callers_only(tmp_path: Path) -> None:
    async with running(push_config(tmp_path / "data")) as server:
        alice = await make_user(server, "alice")
        bob = await make_user(server, "bob")
        sub_id = await webhook(server, bob, "http://127.0.0.1:9/hook")
        again = await webhook(server, bob, "http://127.0.0.1:9/hook", secret="new secret")
        assert again == sub_id  # the same URL again replaces it
        async with HttpClient(server.url, token=alice.token) as http:
            assert (await http.request("DELETE", f"/v1/push/subscriptions/{sub_id}")).status == 404
        async with HttpClient(server.url, token=bob.token) as http:
            assert (await http.request("DELETE", f"/v1/push/subscriptions/{sub_id}")).status == 204
            assert (await http.request("DELETE", f"/v1/push/subscriptions/{sub_id}")).status == 404
            assert (await http.request("DELETE", "/v1/push/subscriptions/a%00b")).status == 404
        assert subscriptions(server, "bob") == []
