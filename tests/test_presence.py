"""Presence on trio's MockClock: heartbeats, timeouts, grace, fan-out, queries, restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from chatd.client import ChatClient, HttpClient, Session
from chatd.server import Server
from tests.conftest import make_config, make_user, running


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Every test takes this fixture as an argument: pytest-trio runs a test under a Clock
    # found among its arguments. Virtual time jumps once the loop has idled for 10 real ms,
    # so loopback I/O and password hashing finish first; 10 virtual minutes take ~6 s.
    return trio.testing.MockClock(autojump_threshold=0.01)


@pytest.fixture
async def server(data_dir: Path, clock: trio.testing.MockClock) -> AsyncIterator[Server]:
    async with running(make_config(data_dir, presence={"sweep_interval": 1.0})) as srv:
        yield srv


async def befriend(a: ChatClient, b: ChatClient) -> None:
    for x, y in ((a, b), (b, a)):
        async with HttpClient(x.base_url, token=x.token) as http:
            await http.call("PUT", f"/v1/friends/{y.user_id}")


async def presence_frame(session: Session, user: str, status: str | None = None) -> dict[str, Any]:
    """The next presence frame about ``user`` (with ``status``, if given)."""
    with trio.fail_after(120):
        while True:
            frame = await session.next_frame()
            if frame["type"] == "presence" and frame["user_id"] == user:
                if status is None or frame["status"] == status:
                    return frame


async def no_presence(session: Session) -> None:
    await session.ping()
    while session._in_recv.statistics().current_buffer_used:
        assert (await session.next_frame())["type"] != "presence"


async def query(client: ChatClient, *users: str) -> Any:
    path = "/v1/presence?" + "&".join(f"user_id={u}" for u in users)
    async with HttpClient(client.base_url, token=client.token) as http:
        return await http.request("GET", path)


async def test_online_on_connect_and_snapshot(
    server: Server, clock: trio.testing.MockClock
) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    await befriend(alice, bob)
    async with bob.session() as b:
        snap = await presence_frame(b, "alice")
        assert snap["status"] == "offline" and snap["last_active"] is None
        async with alice.session() as a:
            online = await presence_frame(b, "alice")
            assert online["status"] == "online" and isinstance(online["last_active"], int)
            mine = await presence_frame(a, "bob")  # alice's snapshot of her friends
            assert mine["status"] == "online"
            body = (await query(bob, "alice")).json()
            assert body["presence"][0]["status"] == "online"


async def test_heartbeats_keep_a_device_online_for_ten_minutes(
    server: Server, clock: trio.testing.MockClock
) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    await befriend(alice, bob)
    async with bob.session(heartbeat=10) as b, alice.session(heartbeat=10) as a:
        await presence_frame(b, "alice", "online")
        start = trio.current_time()
        await trio.sleep(600)
        assert trio.current_time() - start >= 600
        assert a.closed is None and a.connects == 1
        assert (await query(bob, "alice")).json()["presence"][0]["status"] == "online"
        await no_presence(b)


async def test_silent_device_goes_offline_after_the_timeout(
    server: Server, clock: trio.testing.MockClock
) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    await befriend(alice, bob)
    async with bob.session(heartbeat=5) as b:
        async with alice.session(heartbeat=None, reconnect=False) as a:
            await presence_frame(b, "alice", "online")
            await a.ping()
            last_heard = trio.current_time()
            offline = await presence_frame(b, "alice")
            elapsed = trio.current_time() - last_heard
            assert offline["status"] == "offline"
            assert 30 <= elapsed <= 32  # the timeout plus at most one sweeper tick
            with trio.fail_after(5):
                while a.closed is None:  # noqa: ASYNC110 - the client's close is not an event
                    await trio.sleep(0.1)
            assert a.closed.reason.code == 1008
        assert (await query(bob, "alice")).json()["presence"][0]["status"] == "offline"


async def test_offline_only_when_the_last_device_goes(
    server: Server, clock: trio.testing.MockClock
) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    await befriend(alice, bob)
    async with bob.session() as b:
        async with alice.session() as a1:
            await presence_frame(b, "alice", "online")
            async with alice.session():
                pass
            await trio.sleep(20)  # well past the grace period
            await no_presence(b)
            assert a1.closed is None
        left = trio.current_time()
        offline = await presence_frame(b, "alice")
        assert offline["status"] == "offline"
        assert 5 <= trio.current_time() - left <= 7  # grace plus one tick


async def test_grace_period_suppresses_flaps(server: Server, clock: trio.testing.MockClock) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    await befriend(alice, bob)
    async with bob.session() as b:
        async with alice.session():
            await presence_frame(b, "alice", "online")
        await trio.sleep(2)
        async with alice.session():
            await trio.sleep(30)
            await no_presence(b)


async def test_only_friends_get_presence(server: Server, clock: trio.testing.MockClock) -> None:
    alice, bob, carol, dave = [
        await make_user(server, u) for u in ("alice", "bob", "carol", "dave")
    ]
    await befriend(alice, bob)
    async with HttpClient(alice.base_url, token=alice.token) as http:
        await http.call("PUT", "/v1/friends/carol")  # requested, not friends
        await http.call("POST", "/v1/groups", {"name": "g", "members": ["dave"]})
    async with bob.session() as b, carol.session() as c, dave.session() as d:
        async with alice.session():
            assert (await presence_frame(b, "alice", "online"))["status"] == "online"
            await no_presence(c)
            await no_presence(d)


async def test_presence_queries_are_authorized(
    server: Server, clock: trio.testing.MockClock
) -> None:
    alice, bob, carol, dave = [
        await make_user(server, u) for u in ("alice", "bob", "carol", "dave")
    ]
    await befriend(alice, bob)
    async with HttpClient(alice.base_url, token=alice.token) as http:
        await http.call("POST", "/v1/groups", {"name": "g", "members": ["dave"]})
    ok = await query(alice, "bob", "alice")
    assert ok.status == 200
    assert [p["user_id"] for p in ok.json()["presence"]] == ["bob", "alice"]
    assert all(p["status"] == "offline" for p in ok.json()["presence"])
    co_member = await query(alice, "bob", "dave")  # a shared group is not friendship
    assert co_member.status == 403 and co_member.json()["error"] == "forbidden"
    assert co_member.json()["message"] == "not a friend: dave"
    refused = await query(alice, "bob", "carol")
    assert refused.status == 403 and refused.json()["error"] == "forbidden"
    assert "carol" in refused.json()["message"]
    assert (await query(carol, "alice")).status == 403
    assert (await query(alice)).status == 400
    assert (await query(alice, "Not_Valid!")).status == 400
    async with HttpClient(alice.base_url) as anonymous:
        assert (await anonymous.request("GET", "/v1/presence?user_id=bob")).status == 401


async def test_last_active_survives_a_restart(
    data_dir: Path, clock: trio.testing.MockClock
) -> None:
    config = make_config(data_dir)
    async with running(config) as server:
        alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
        await befriend(alice, bob)
        async with alice.session():
            await trio.sleep(3)
        await trio.sleep(10)  # past the grace period: offline announced and stored
        before = (await query(bob, "alice")).json()["presence"][0]
        assert before["status"] == "offline" and isinstance(before["last_active"], int)
    async with running(config) as server:
        bob.base_url = server.url
        after = (await query(bob, "alice")).json()["presence"][0]
    assert after == before
