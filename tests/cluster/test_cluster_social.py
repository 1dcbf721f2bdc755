"""Friends, presence, groups, receipts and typing across three real shards, and Redis down.

Rows owned by another shard (a friend's side of a friendship, a remote member's membership)
travel as outbox records through Redis, so the tests poll for them with a deadline.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from trio_websocket import WebSocketConnection

from chatd.client.http import HttpClient
from tests.cluster.redis import RedisServer
from tests.cluster.shards import Shards
from tests.cluster.test_cluster import hello, signup_login


def homed(shards: Shards, *names: str) -> list[str]:
    """One new user id homed on each named shard, in order."""
    out, i = [], 0
    for name in names:
        while shards.home(f"x{i:04d}").name != name or f"x{i:04d}" in out:
            i += 1
        out.append(f"x{i:04d}")
    return out


async def eventually(check: Callable[[], Awaitable[bool]], wait: float = 10.0) -> None:
    """Poll ``check`` until true (the state it reads is on another process: no event to wait
    for here)."""
    with trio.fail_after(wait):
        for _ in range(int(wait / 0.05) + 1):
            if await check():
                return
            await trio.sleep(0.05)


async def call(shards: Shards, shard: str, token: str, method: str, path: str) -> Any:
    async with HttpClient(shards.url(shard), token=token) as http:
        return await http.call(method, path)


async def next_of(ws: WebSocketConnection, kind: str, wait: float = 10.0) -> dict[str, Any]:
    with trio.fail_after(wait):
        while True:
            frame = json.loads(await ws.get_message())
            if frame["type"] == kind:
                return frame


async def test_friends_and_presence_across_shards(shards: Shards) -> None:
    a, b, c, d = homed(shards, "s1", "s2", "s2", "s3")
    logins = await signup_login(shards, [a, b, c, d])
    tok = {u: logins[u]["token"] for u in logins}

    async def state(user: str, other: str) -> str | None:
        rows = (await call(shards, "s3", tok[user], "GET", "/v1/friends"))["friends"]
        return next((r["state"] for r in rows if r["user_id"] == other), None)

    assert (await call(shards, "s2", tok[a], "PUT", f"/v1/friends/{b}"))["state"] == "requested"
    await eventually(lambda: _is(state(b, a), "pending"))
    assert (await call(shards, "s1", tok[b], "PUT", f"/v1/friends/{a}"))["state"] == "friends"
    await eventually(lambda: _is(state(a, b), "friends"))
    # Requests that cross (each asks before the other's record lands) still make friends.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, shards, "s1", tok[c], "PUT", f"/v1/friends/{d}")
        nursery.start_soon(call, shards, "s1", tok[d], "PUT", f"/v1/friends/{c}")
    await eventually(lambda: _is(state(c, d), "friends"))
    await eventually(lambda: _is(state(d, c), "friends"))

    async with trio.open_nursery() as nursery:
        wb = await hello(nursery, logins[b]["ws_url"], tok[b])
        snapshot = await next_of(wb, "presence")  # the snapshot names a, homed on s1
        assert (snapshot["user_id"], snapshot["status"]) == (a, "offline")
        wa = await hello(nursery, logins[a]["ws_url"], tok[a])
        online = await next_of(wb, "presence")
        assert (online["user_id"], online["status"]) == (a, "online")
        seen = await call(shards, "s3", tok[b], "GET", f"/v1/presence?user_id={a}")
        assert seen["presence"][0]["status"] == "online"
        await wa.aclose()
        offline = await next_of(wb, "presence")
        assert (offline["user_id"], offline["status"]) == (a, "offline")
        await wb.aclose()
        nursery.cancel_scope.cancel()


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


async def test_group_membership_receipts_and_typing_across_shards(shards: Shards) -> None:
    owner, m, k = homed(shards, "s1", "s2", "s3")
    logins = await signup_login(shards, [owner, m, k])
    tok = {u: logins[u]["token"] for u in logins}
    async with HttpClient(shards.url("s3"), token=tok[owner]) as http:
        group = await http.call("POST", "/v1/groups", {"name": "g", "members": [m, k]})
    channel = group["channel_id"]
    assert shards.discovery.home(channel).name == "s1"  # made on its creator's shard

    async def listed(user: str) -> bool:
        rows = (await call(shards, "s1", tok[user], "GET", "/v1/channels"))["channels"]
        return any(r["channel_id"] == channel for r in rows)

    await eventually(lambda: listed(m))  # before any message: the group's record got there
    await eventually(lambda: listed(k))
    async with trio.open_nursery() as nursery:
        ws = {u: await hello(nursery, logins[u]["ws_url"], tok[u]) for u in (owner, m, k)}
        await ws[owner].send_message(
            json.dumps({"type": "send", "ref": "r1", "channel": channel, "body": "hi"})
        )
        assert (await next_of(ws[m], "msg"))["body"] == "hi"
        await next_of(ws[k], "msg")
        await ws[m].send_message(json.dumps({"type": "read", "channel": channel, "msg_id": 1}))
        read = await next_of(ws[owner], "read")
        assert (read["user_id"], read["msg_id"]) == (m, 1)
        await ws[k].send_message(json.dumps({"type": "typing", "channel": channel}))
        typing = await next_of(ws[m], "typing")
        assert typing["user_id"] == k
        rows = (await call(shards, "s2", tok[m], "GET", "/v1/channels"))["channels"]
        assert [r["read_msg_id"] for r in rows if r["channel_id"] == channel] == [1]
        history = await call(shards, "s3", tok[k], "GET", f"/v1/channels/{channel}/messages")
        assert [x["body"] for x in history["messages"]] == ["hi"]
        # WebSocket history on a member's home shard comes from the group's sequencer
        await ws[m].send_message(json.dumps({"type": "history", "ref": "h", "channel": channel}))
        page = await next_of(ws[m], "history")
        assert (page["ref"], [x["body"] for x in page["messages"]]) == ("h", ["hi"])
        for conn in ws.values():
            await conn.aclose()
        nursery.cancel_scope.cancel()
    async with HttpClient(shards.url("s2"), token=tok[owner]) as http:
        response = await http.request("DELETE", f"/v1/groups/{channel}/members/{k}")
        assert response.status == 204
    await eventually(lambda: _not(listed(k)))
    async with HttpClient(shards.url("s2"), token=tok[k]) as http:
        assert (await http.request("GET", f"/v1/groups/{channel}")).status == 403


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def test_redis_down_for_ten_seconds(shards: Shards, redis_server: RedisServer) -> None:
    """Same-shard chat goes on; cross-shard messages are acked and arrive once Redis is back;
    ``/healthz`` says the broker is down without failing."""
    a, b, c = homed(shards, "s1", "s1", "s2")
    logins = await signup_login(shards, [a, b, c])
    tok = {u: logins[u]["token"] for u in logins}
    async with trio.open_nursery() as nursery:
        ws = {u: await hello(nursery, logins[u]["ws_url"], tok[u]) for u in (a, b, c)}
        await trio.to_thread.run_sync(redis_server.stop)

        async def broker_down() -> bool:
            async with HttpClient(shards.url("s1")) as http:
                health = await http.call("GET", "/healthz")
            return health["broker"]["state"] == "down"

        await eventually(broker_down)
        await ws[a].send_message(json.dumps({"type": "send", "ref": "same", "to": b, "body": "s"}))
        assert (await next_of(ws[b], "msg"))["body"] == "s"
        await ws[a].send_message(json.dumps({"type": "send", "ref": "x", "to": c, "body": "x"}))
        ack = await next_of(ws[a], "ack", 10)
        await trio.sleep(10 - 1)
        await trio.to_thread.run_sync(redis_server.start)
        delivered = await next_of(ws[c], "msg", 20)
        assert (delivered["body"], delivered["msg_id"]) == ("x", ack["msg_id"])
        for conn in ws.values():
            await conn.aclose()
        nursery.cancel_scope.cancel()


async def test_dm_sequenced_on_the_recipients_home(shards: Shards) -> None:
    """A 1:1 channel is sequenced on one of its members' homes (never a third shard); here the
    recipient's, so the sender's send is forwarded: sends, history and receipts work."""
    i = 0
    while True:
        a, b = f"t{i:04d}a", f"t{i:04d}b"
        channel = f"dm:{a}:{b}"
        if shards.home(a).name != shards.home(b).name == shards.discovery.home(channel).name:
            break
        i += 1
    assert all(
        shards.discovery.home(f"dm:t{j:04d}a:t{j:04d}b").name
        in (shards.home(f"t{j:04d}a").name, shards.home(f"t{j:04d}b").name)
        for j in range(200)
    )
    logins = await signup_login(shards, [a, b])
    tok = {u: logins[u]["token"] for u in logins}
    async with trio.open_nursery() as nursery:
        ws = {u: await hello(nursery, logins[u]["ws_url"], tok[u]) for u in (a, b)}
        await ws[a].send_message(json.dumps({"type": "send", "ref": "1", "to": b, "body": "yo"}))
        ack = await next_of(ws[a], "ack")
        assert (await next_of(ws[b], "msg"))["msg_id"] == ack["msg_id"] == 1
        await ws[b].send_message(json.dumps({"type": "read", "channel": channel, "msg_id": 1}))
        assert (await next_of(ws[a], "read"))["user_id"] == b
        for conn in ws.values():
            await conn.aclose()
        nursery.cancel_scope.cancel()
    page = await call(shards, "s1", tok[b], "GET", f"/v1/channels/{channel}/messages")
    assert [m["body"] for m in page["messages"]] == ["yo"]
