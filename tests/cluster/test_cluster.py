"""Three real shards on a real Redis: any shard answers, messages cross shards exactly once.

Each test runs `python -m chatd serve --discovery ...` processes (tests/cluster/shards.py) and
talks to them over loopback like a client: HTTP on any shard, WebSocket on the home shard.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import trio
from trio_websocket import WebSocketConnection, connect_websocket_url

from chatd.client.http import HttpClient
from chatd.cluster import wire
from tests.cluster.redis import RedisServer
from tests.cluster.shards import Shards
from tests.wsraw import RawWs

PASSWORD = "correct horse battery"


def spread(shards: Shards, per_shard: int, prefix: str = "u") -> list[str]:
    """User ids with ``per_shard`` homed on each shard."""
    by_shard: dict[str, list[str]] = defaultdict(list)
    i = 0
    while min((len(by_shard[s.name]) for s in shards.discovery.shards), default=0) < per_shard:
        user = f"{prefix}{i:04d}"
        home = shards.home(user).name
        if len(by_shard[home]) < per_shard:
            by_shard[home].append(user)
        i += 1
    return [u for users in by_shard.values() for u in users]


async def signup_login(shards: Shards, users: list[str]) -> dict[str, dict[str, Any]]:
    """Sign each user up on one shard and log in on another; the login answers."""
    names = [s.name for s in shards.discovery.shards]
    out = {}
    for i, user in enumerate(users):
        async with HttpClient(shards.url(names[i % 3])) as http:
            await http.call("POST", "/v1/signup", {"user_id": user, "password": PASSWORD})
        async with HttpClient(shards.url(names[(i + 1) % 3])) as http:
            out[user] = await http.call(
                "POST", "/v1/login", {"user_id": user, "password": PASSWORD}
            )
    return out


async def hello(
    nursery: trio.Nursery, url: str, token: str, since: int | None = None
) -> WebSocketConnection:
    ws = await connect_websocket_url(nursery, url)
    frame: dict[str, Any] = {"type": "hello", "token": token}
    if since is not None:
        frame["since"] = since
    await ws.send_message(json.dumps(frame))
    welcome = json.loads(await ws.get_message())
    assert welcome["type"] == "welcome", welcome
    return ws


async def frames_until(ws: WebSocketConnection, done: Any, wait: float = 20) -> list[dict]:
    got: list[dict] = []
    with trio.fail_after(wait):
        while not done(got):
            frame = json.loads(await ws.get_message())
            if frame["type"] in ("msg", "ack", "error", "synced"):
                got.append(frame)
    return got


async def test_any_shard_answers_and_hello_goes_home(shards: Shards) -> None:
    users = spread(shards, 1)
    logins = await signup_login(shards, users)
    for user, login in logins.items():
        home = shards.home(user)
        assert login["ws_url"] == home.ws_url
        assert login["token"].startswith(f"{user}.")
        for shard in shards.discovery.shards:  # a token is valid on every shard
            async with HttpClient(shard.url, token=login["token"]) as http:
                me = await http.call("GET", "/v1/me")
                assert me["user_id"] == user
                other = next(u for u in users if u != user)
                assert (await http.call("GET", f"/v1/users/{other}"))["user_id"] == other
        elsewhere = next(s for s in shards.discovery.shards if s.name != home.name)
        port = int(elsewhere.url.rsplit(":", 1)[1])
        ws, _ = await RawWs.connect(port, track=False)
        assert ws is not None
        try:
            await ws.send({"type": "hello", "token": login["token"]})
            frames = await ws.recv_until_closed()
        finally:
            await ws.aclose()
        assert frames == [{**frames[0], "code": "wrong_shard", "ws_url": home.ws_url}]
        assert ws.close_code == 4002
    # Logout on a shard that is not the user's home stops the token on every shard.
    user = users[0]
    token = logins[user]["token"]
    not_home = next(s for s in shards.discovery.shards if s.name != shards.home(user).name)
    async with HttpClient(not_home.url, token=token) as http:
        assert (await http.request("POST", "/v1/logout")).status == 204
    for shard in shards.discovery.shards:
        async with HttpClient(shard.url, token=token) as http:
            assert (await http.request("GET", "/v1/me")).status == 401
    async with HttpClient(not_home.url) as http:  # peer routes are not on the public port
        assert (await http.request("POST", "/peer/send", raw=b"x")).status == 404


async def test_dm_and_group_across_all_shards(shards: Shards) -> None:
    users = spread(shards, 10)  # 30 users, 10 homed on each shard
    logins = await signup_login(shards, users)
    owner = users[0]
    async with HttpClient(shards.url("s2"), token=logins[owner]["token"]) as http:
        group = await http.call("POST", "/v1/groups", {"name": "all", "members": users[1:]})
        assert len(group["members"]) == 30
        for shard in shards.discovery.shards:  # any shard answers about the group
            async with HttpClient(shard.url, token=logins[users[-1]]["token"]) as other:
                assert (await other.call("GET", f"/v1/groups/{group['channel_id']}"))[
                    "owner"
                ] == owner
    channel = group["channel_id"]
    senders = [users[0], users[10], users[20]]  # one on each shard
    per_sender = 15
    async with trio.open_nursery() as ws_nursery:
        await _group_traffic(ws_nursery, users, logins, senders, channel, per_sender)
        ws_nursery.cancel_scope.cancel()


async def _group_traffic(
    ws_nursery: trio.Nursery,
    users: list[str],
    logins: dict[str, dict[str, Any]],
    senders: list[str],
    channel: str,
    per_sender: int,
) -> None:
    conns = {u: await hello(ws_nursery, logins[u]["ws_url"], logins[u]["token"]) for u in users}
    try:
        for i in range(per_sender):
            for s in senders:
                await conns[s].send_message(
                    json.dumps(
                        {"type": "send", "ref": f"{s}-{i}", "channel": channel, "body": f"{s} {i}"}
                    )
                )
            # and a 1:1 from each sender to a user homed on the next shard
            for k, s in enumerate(senders):
                to = senders[(k + 1) % 3]
                await conns[s].send_message(
                    json.dumps({"type": "send", "ref": f"{s}-dm-{i}", "to": to, "body": f"dm {i}"})
                )
        total = per_sender * 3
        results: dict[str, list[dict]] = {}

        async def collect(user: str) -> None:
            sent = 2 * per_sender if user in senders else 0
            dms = per_sender if user in senders else 0
            want_msgs = total - (per_sender if user in senders else 0) + dms
            results[user] = await frames_until(
                conns[user],
                lambda got: (
                    sum(f["type"] == "ack" for f in got) >= sent
                    and sum(f["type"] == "msg" for f in got) >= want_msgs
                ),
            )

        async with trio.open_nursery() as nursery:
            for user in users:
                nursery.start_soon(collect, user)
        for user, got in results.items():
            assert not [f for f in got if f["type"] == "error"], (user, got)
            msgs = [f for f in got if f["type"] == "msg"]
            acks = [f for f in got if f["type"] == "ack"]
            seen = {(f["channel"], f["msg_id"]) for f in msgs + acks}
            assert len(seen) == len(msgs) + len(acks), f"{user} got a message twice"
            inbox = sorted(f["inbox"] for f in msgs + acks)
            assert inbox == list(range(1, len(inbox) + 1)), f"{user}: inbox seqs with gaps"
            group_ids = [f["msg_id"] for f in msgs + acks if f["channel"] == channel]
            group_ids.sort()
            assert group_ids == list(range(1, total + 1))
            in_order = [f["msg_id"] for f in msgs if f["channel"] == channel]
            assert in_order == sorted(in_order), f"{user} saw the group out of order"
        # A reconnecting device replays the same inbox from any cursor.
        user = users[15]
        ws = await hello(ws_nursery, logins[user]["ws_url"], logins[user]["token"], since=0)
        replay = await frames_until(ws, lambda got: got and got[-1]["type"] == "synced")
        assert [f["inbox"] for f in replay[:-1]] == list(range(1, total + 1))
        await ws.aclose()
    finally:
        for ws in conns.values():
            await ws.aclose()


async def test_recipient_home_killed_and_redis_restarted_mid_stream(
    shards: Shards, redis_server: RedisServer
) -> None:
    users = spread(shards, 1)
    logins = await signup_login(shards, users)
    async with trio.open_nursery() as ws_nursery:
        await _kill_and_restart(ws_nursery, shards, redis_server, logins, users)
        ws_nursery.cancel_scope.cancel()


async def _kill_and_restart(
    ws_nursery: trio.Nursery,
    shards: Shards,
    redis_server: RedisServer,
    logins: dict[str, dict[str, Any]],
    users: list[str],
) -> None:
    sender, recipient = users[0], users[1]
    r_home = shards.home(recipient).name
    ws = await hello(ws_nursery, logins[sender]["ws_url"], logins[sender]["token"])
    acked: dict[str, dict] = {}

    async def send_all(refs: list[str]) -> None:
        """Send until each ref is acked (resending the same ref after an error)."""
        for ref in refs:
            with trio.fail_after(60):
                while ref not in acked:
                    frame = {"type": "send", "ref": ref, "to": recipient, "body": ref}
                    await ws.send_message(json.dumps(frame))
                    answer = json.loads(await ws.get_message())
                    while answer.get("ref") != ref:
                        answer = json.loads(await ws.get_message())
                    if answer["type"] == "ack":
                        acked[ref] = answer
                    else:
                        await trio.sleep(0.2)

    await send_all([f"a{i}" for i in range(20)])
    shards.kill(r_home)  # kill -9 the recipient's home shard mid-stream
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_all, [f"b{i}" for i in range(20)])
        await trio.sleep(0.5)
        await trio.to_thread.run_sync(shards.start, r_home)
    redis_server.kill()  # and Redis, with AOF: what it had acknowledged comes back
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_all, [f"c{i}" for i in range(20)])
        await trio.sleep(0.5)
        await trio.to_thread.run_sync(redis_server.restart)
    await ws.aclose()
    reader = await hello(
        ws_nursery, logins[recipient]["ws_url"], logins[recipient]["token"], since=0
    )
    try:
        replay = await frames_until(
            reader, lambda got: len([f for f in got if f["type"] == "msg"]) >= len(acked), 60
        )
        with trio.move_on_after(2):  # nothing more may come: no duplicates
            replay += await frames_until(reader, lambda got: False, 2)
    except trio.TooSlowError:
        pass
    finally:
        await reader.aclose()
    bodies = [f["body"] for f in replay if f["type"] == "msg"]
    assert sorted(bodies) == sorted(acked), "every acked message once, nothing else"
    ids = [f["msg_id"] for f in replay if f["type"] == "msg"]
    assert ids == sorted(ids) == list(range(1, len(ids) + 1))


async def test_hostile_requests_to_public_and_peer_ports(shards: Shards) -> None:
    """Clients cannot use the shards' own headers; the peer port wants the secret and checks
    what it is sent; after all of it every shard still serves."""
    users = spread(shards, 1)
    logins = await signup_login(shards, users)
    user = users[0]
    token = logins[user]["token"]
    victim = users[1]
    elsewhere = next(s for s in shards.discovery.shards if s.name != shards.home(user).name)
    async with HttpClient(elsewhere.url) as http:
        # forwarded HEAD: the GET's status and headers, no body
        head = await http.request("HEAD", "/v1/me", token=token)
        assert (head.status, head.body) == (200, b"")
        # a hop count or an asserted user sent by a client means nothing
        hops = {"x-chatd-hops": "99999999999999999999", "x-chatd-user": victim}
        me = await http.request("GET", "/v1/me", token=token, headers=hops)
        assert (me.status, me.json()["user_id"]) == (200, user)
        bare = await http.request("GET", "/v1/me", headers={"x-chatd-user": victim})
        assert bare.status == 401
        for bad in ("x.y", f"{victim}.", ".", f"{victim}.garbage"):
            assert (await http.request("GET", "/v1/me", token=bad)).status == 401
        odd = await http.request("PROPFIND", "/v1/me", token=token)
        assert odd.status == 405
    peer_host, peer_port = elsewhere.peer_host, elsewhere.peer_port
    async with HttpClient(f"http://{peer_host}:{peer_port}") as peer:
        assert (await peer.request("POST", "/peer/send", raw=b"\x93")).status == 403
        secret = {"x-chatd-secret": shards.discovery.secret}
        for body in (b"\xc1", wire.pack({"sends": [{"sender": 1}]}), wire.pack([1, 2])):
            answer = await peer.request("POST", "/peer/send", raw=body, headers=secret)
            assert answer.status == 400, body
        confused = {"sends": [{"sender": user, "ref": 7, "channel": ["x"], "body": None}]}
        answer = await peer.request("POST", "/peer/send", raw=wire.pack(confused), headers=secret)
        assert answer.status == 400
    for shard in shards.discovery.shards:
        async with HttpClient(shard.url) as http:
            assert (await http.request("GET", "/healthz")).status == 200
